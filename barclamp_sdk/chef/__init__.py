"""Transport: a thin Chef server API client (HTTP, signing, retries).

Nothing in this package knows about Crowbar.
"""

from barclamp_sdk.chef.auth import ChefSigner
from barclamp_sdk.chef.client import ChefClient, Collection, DataBags, RequestStats
from barclamp_sdk.chef.config import ChefConfig, RetryPolicy

__all__ = [
    "ChefClient",
    "ChefConfig",
    "ChefSigner",
    "Collection",
    "DataBags",
    "RequestStats",
    "RetryPolicy",
]
