"""barclamp-sdk: Crowbar's barclamp model on any Chef server."""

from barclamp_sdk.errors import CrowbarError

__all__ = ["CrowbarError"]
