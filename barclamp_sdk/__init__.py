"""barclamp-sdk: Crowbar's barclamp model on any Chef server.

>>> import barclamp_sdk
>>> crowbar = barclamp_sdk.connect()
>>> crowbar.proposals.create("nova", "default")
"""

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.model.barclamp import Attributes, Barclamp, Element, ProposalRef
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.errors import CrowbarError
from barclamp_sdk.model.inventory import Inventory, Machine
from barclamp_sdk.model.secrets import Secret

__all__ = [
    "Attributes",
    "Barclamp",
    "Crowbar",
    "CrowbarError",
    "Element",
    "Inventory",
    "Machine",
    "Proposal",
    "ProposalRef",
    "Secret",
    "connect",
]
