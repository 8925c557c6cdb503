"""What a commit did (or would do): :class:`CommitResult` and its :class:`RoleChange` list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.model.proposal import Proposal
from barclamp_sdk.model.spec import ProposalRef


@dataclass
class RoleChange:
    """What a commit does (or would do) to one role."""

    role: str
    action: str  # create | update
    node: str | None = None
    run_list_before: list[str] = field(default_factory=list)
    run_list_after: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}


@dataclass
class CommitResult:
    """The outcome of a commit.

    ``status``: ``applied``, ``unchanged``, ``queued`` (with ``reasons``),
    ``planned`` (a dry run) or ``deactivated``. Inside the model a commit
    that something blocks comes back ``blocked``, with the ``document`` it
    looked at, for the proposal lifecycle to queue.
    """

    proposal: ProposalRef
    revision: int
    status: str
    reasons: list[str] = field(default_factory=list)
    changes: list[RoleChange] = field(default_factory=list)
    machines_written: int = 0
    repaired_nodes: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    document: Proposal | None = field(default=None, repr=False, compare=False)
    #: The document was marked queued when the commit read it (the lifecycle takes it out of the queue).
    was_queued: bool = field(default=False, repr=False, compare=False)
    #: A queued result only: the queue held this proposal at this revision already (nothing new was queued).
    already_queued: bool = field(default=False, repr=False, compare=False)

    @property
    def queued(self) -> bool:
        return self.status == "queued"

    def as_dict(self) -> dict[str, Any]:
        return {
            "proposal": str(self.proposal), "revision": self.revision, "status": self.status,
            "reasons": self.reasons, "machines_written": self.machines_written,
            "repaired_nodes": self.repaired_nodes, "drifted": self.drifted,
            "seconds": round(self.seconds, 3),
            "changes": [c.as_dict() for c in self.changes],
        }
