"""Committing a proposal: pure planning, gating, writing, dry runs and results.

* :mod:`.plan` what a proposal wants on each machine (pure, no server);
* :mod:`.gate` what keeps it from being applied now;
* :mod:`.write` the speculative and careful passes, and undo;
* :mod:`.dryrun` the exact changes, writing nothing;
* :mod:`.committer` one commit from document to roles;
* :mod:`.result` what a commit did.
"""

from barclamp_sdk.model.commit.committer import Committer
from barclamp_sdk.model.commit.result import CommitResult, RoleChange

__all__ = ["CommitResult", "Committer", "RoleChange"]
