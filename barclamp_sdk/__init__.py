"""barclamp-sdk: Crowbar's barclamp model on any Chef server.

>>> import barclamp_sdk
>>> crowbar = barclamp_sdk.connect()
>>> crowbar.proposals.create("nova", "default")

Everything a script or a barclamp needs is importable from here (and, in
tests, from :mod:`barclamp_sdk.testing`); the modules under
``barclamp_sdk.model`` and ``barclamp_sdk.chef`` are the implementation.
"""

from barclamp_sdk.api import Crowbar, connect
from barclamp_sdk.bmc import BMC, BMCEndpoint
from barclamp_sdk.errors import (
    BMCError,
    ConcurrencyError,
    ConfigurationError,
    CrowbarError,
    DriftError,
    NotFoundError,
    RevisionConflict,
    ValidationError,
)
from barclamp_sdk.model.addresses import AllocationReport, NetworkSpec
from barclamp_sdk.model.barclamp import Barclamp
from barclamp_sdk.model.bmctrust import ConfirmedBMC
from barclamp_sdk.model.bmctrust import endpoint_text as bmc_endpoint_text
from barclamp_sdk.model.bmctrust import report_warnings as bmc_report_warnings
from barclamp_sdk.model.batch import BatchReport, Scenario, dump as dump_scenario, parse as parse_scenario
from barclamp_sdk.model.cluster import ClusterView, MachineRecord
from barclamp_sdk.model.commit import CommitResult, RoleChange
from barclamp_sdk.model.hooks import Context
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.inventory import BlockDevice, Interface, Inventory, Machine
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.platforms import LINUX
from barclamp_sdk.model.placement import (
    best_controller,
    general_purpose,
    is_managed_hypervisor,
    most_free_disks,
    odd_quorum,
    runs_services,
    short,
)
from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.proposals import ProposalDiff, ProposalStatus, RevertResult
from barclamp_sdk.model.audit import AuditTrail
from barclamp_sdk.model.secrets import Secret, SecretRef
from barclamp_sdk.model.spec import Action, ActionResult, Attributes, Element, Link, ProposalRef
from barclamp_sdk.model.states import LIFECYCLE, STATES

__all__ = [
    "BMC",
    "BMCEndpoint",
    "BMCError",
    "Action",
    "ActionResult",
    "AllocationReport",
    "Attributes",
    "Barclamp",
    "BatchReport",
    "AuditTrail",
    "BlockDevice",
    "ClusterView",
    "ConfirmedBMC",
    "CommitResult",
    "ConcurrencyError",
    "ConfigurationError",
    "Context",
    "Crowbar",
    "CrowbarError",
    "DriftError",
    "Element",
    "Interface",
    "Inventory",
    "LIFECYCLE",
    "LINUX",
    "Link",
    "Machine",
    "MachineRecord",
    "NetworkSpec",
    "NotFoundError",
    "Proposal",
    "ProposalDiff",
    "ProposalRef",
    "ProposalStatus",
    "RevertResult",
    "RevisionConflict",
    "RoleChange",
    "STATES",
    "Scenario",
    "Secret",
    "SecretRef",
    "ValidationError",
    "best_controller",
    "bmc_endpoint_text",
    "bmc_report_warnings",
    "connect",
    "dump_scenario",
    "general_purpose",
    "is_managed_hypervisor",
    "most_free_disks",
    "now_iso",
    "odd_quorum",
    "parse_scenario",
    "run_parallel",
    "runs_services",
    "short",
]
