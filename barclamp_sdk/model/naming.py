"""Names of the Chef objects barclamp-sdk reads and writes, and their rules.

Kept as Crowbar 1.x had them, so Chef admins who knew Crowbar find them:

========================================  =====================================
``crowbar-<node with . as _>``            role: a machine's Crowbar data
``<barclamp>-config-<proposal>``          role: a committed proposal
``<element>``                             role: a barclamp element (recipes)
data bag ``crowbar``, ``bc-<bc>-<name>``  a proposal (``bc-template-<bc>``: template)
data bag ``crowbar``, item ``queue``      the proposal queue
data bag ``crowbar_history``              every revision of every proposal
data bag ``crowbar_locks``                locks (atomic create as a mutex)
data bag ``crowbar_secrets``              encrypted secrets (Chef format v3)
========================================  =====================================
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

from barclamp_sdk.errors import ValidationError

PROPOSALS_BAG = "crowbar"
HISTORY_BAG = "crowbar_history"
LOCKS_BAG = "crowbar_locks"
SECRETS_BAG = "crowbar_secrets"
AUDIT_BAG = "crowbar_audit"
QUEUE_ITEM = "queue"

#: Names Crowbar refused for proposals (they clash with its REST routes).
RESERVED_PROPOSAL_NAMES = frozenset({"template", "nodes", "commit", "status"})

_PROPOSAL_NAME = re.compile(r"[A-Za-z0-9_]+")
_BARCLAMP_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Chef role names allow letters, digits, '-' and '_'; Crowbar maps '.' to '_'.
# Every check is anchored at both ends (fullmatch): "name\n" is refused.
_NODE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
MAX_NODE_NAME = 255
MAX_PROPOSAL_NAME = 64

#: Machines are locked in this many shards (a commit never needs more locks).
MACHINE_LOCK_SHARDS = 32


NODE_ROLE_PREFIX = "crowbar-"


def node_role_name(node: str) -> str:
    """The per-node role: ``crowbar-`` + node name with every ``.`` as ``_``."""
    return NODE_ROLE_PREFIX + node.replace(".", "_")


def check_node_name(node: str) -> str:
    """Refuse node names that cannot become a valid ``crowbar-<node>`` role."""
    if not isinstance(node, str) or not node:
        raise ValidationError("machine name is empty")
    if len(node) > MAX_NODE_NAME:
        raise ValidationError(
            f"machine name is {len(node)} characters long; at most {MAX_NODE_NAME} are allowed"
        )
    if not _NODE_NAME.fullmatch(node):
        bad = sorted({c for c in node if not re.fullmatch(r"[A-Za-z0-9_.-]", c)})
        shown = " ".join(repr(c) for c in bad[:5])
        raise ValidationError(
            f"machine name {node!r} has characters a Chef role name cannot hold ({shown}); "
            "use letters, digits, '.', '-' and '_'"
        )
    if node in (".", ".."):
        raise ValidationError(f"machine name {node!r} cannot be used: URLs resolve it away, so "
                              "Chef could never address the node")
    return node


def check_role_owner(node: str, role: object) -> None:
    """Refuse ``role`` as the role of ``node`` unless it records ``node`` as its machine.

    Names that differ only in ``.`` and ``_`` (``a.b.example.com``,
    ``a_b.example.com``) map to one role. The rule: the first node discovered
    claims the role name, recorded in ``default_attributes.crowbar.node``; any
    other node mapping to it is refused (and reported) until renamed. A role
    under the name that records no machine is refused the same way.
    """
    attributes = role.get("default_attributes") if isinstance(role, dict) else None
    data = attributes.get("crowbar") if isinstance(attributes, dict) else None
    owner = data.get("node") if isinstance(data, dict) else None
    name = node_role_name(node)
    if not isinstance(owner, str):
        raise ValidationError(f"machine name {node!r} maps to role {name}, which exists but is not a "
                              "Crowbar machine role (no default_attributes.crowbar.node); rename or delete that role")
    if owner != node:
        raise ValidationError(f"machine name {node!r} maps to role {name}, which already belongs to {owner!r} "
                              "(names differing only in '.' and '_' share one role; the first discovered "
                              "keeps it): rename the node")


def check_barclamp_name(name: str) -> str:
    """Barclamp names: lower case letters, digits and ``_``, starting with a letter."""
    if not isinstance(name, str) or not _BARCLAMP_NAME.fullmatch(name):
        raise ValidationError(
            f"barclamp name {name!r} is invalid; use lower-case letters, digits and '_'"
        )
    return name


def check_proposal_name(name: str) -> str:
    """Proposal names: ``[A-Za-z0-9_]+``, not one of Crowbar's reserved words."""
    if not isinstance(name, str) or not name:
        raise ValidationError("proposal name is empty")
    if name in RESERVED_PROPOSAL_NAMES:
        raise ValidationError(
            f"proposal name {name!r} is reserved; choose another "
            f"(reserved: {', '.join(sorted(RESERVED_PROPOSAL_NAMES))})"
        )
    if len(name) > MAX_PROPOSAL_NAME:
        raise ValidationError(f"proposal name is longer than {MAX_PROPOSAL_NAME} characters")
    if not _PROPOSAL_NAME.fullmatch(name):
        raise ValidationError(
            f"proposal name {name!r} is invalid; use only letters, digits and '_'"
        )
    return name


def proposal_item_id(barclamp: str, name: str) -> str:
    """The data bag item of a proposal: ``bc-<barclamp>-<name>``."""
    return f"bc-{barclamp}-{name}"


def proposal_name_of(barclamp: str, item_id: str) -> str:
    """The proposal name in a proposal item id (the id itself when it is not one of ``barclamp``)."""
    prefix = proposal_item_id(barclamp, "")
    return item_id[len(prefix):] if item_id.startswith(prefix) else item_id


def barclamp_of_item(item_id: str) -> str | None:
    """The barclamp of a proposal item id (``bc-nova-default`` -> ``nova``), None for others and templates."""
    if not item_id.startswith("bc-") or item_id.startswith(template_item_id("")):
        return None
    return item_id[3:].split("-", 1)[0]


def secrets_item_id(barclamp: str, name: str) -> str:
    """The ``crowbar_secrets`` item holding a proposal's secrets: ``<barclamp>-<name>``."""
    return f"{barclamp}-{name}"


def template_item_id(barclamp: str) -> str:
    """The data bag item of a barclamp's template: ``bc-template-<barclamp>``."""
    return f"bc-template-{barclamp}"


def history_item_id(barclamp: str, name: str, revision: int) -> str:
    """One revision of a proposal in the history bag."""
    return f"{barclamp}-{name}-{revision}"


def config_role_name(barclamp: str, name: str) -> str:
    """The role a committed proposal becomes: ``<barclamp>-config-<name>``."""
    return f"{barclamp}-config-{name}"


def machine_shard(node: str) -> int:
    """The lock shard a machine belongs to (stable across processes)."""
    return zlib.crc32(node.encode()) % MACHINE_LOCK_SHARDS


def machine_lock_name(shard: int) -> str:
    return f"machines-{shard:02d}"


def proposal_lock_name(barclamp: str, name: str) -> str:
    return f"proposal-{barclamp}-{name}"


def proposal_of_lock(lock_name: str, barclamps: Iterable[str]) -> tuple[str, str] | None:
    """(barclamp, proposal) whose lock is ``lock_name`` (the longest barclamp name that fits), or None."""
    fits = [b for b in barclamps if lock_name.startswith(proposal_lock_name(b, "")) and
            len(lock_name) > len(proposal_lock_name(b, ""))]
    if not fits:
        return None
    barclamp = max(fits, key=len)
    return barclamp, lock_name[len(proposal_lock_name(barclamp, "")):]
