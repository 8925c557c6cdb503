"""Crowbar's machine states and the transitions between them.

A machine's boot scripts report each step (``transition(machine, state)``)::

    discovering -> discovered -> [allocate] -> hardware-installing
      -> hardware-installed -> installing -> installed -> readying -> ready

``ready`` machines go to ``applying`` and back while proposals are applied,
and to ``hardware-updating`` for firmware work. ``problem`` is reachable
from anywhere and recovers into the step being retried. Operator actions
(``reset``, ``reinstall``, ``delete``, ``update``, ``reboot``, ``shutdown``,
``poweron``) are allowed from every state but ``delete-final``.
"""

from __future__ import annotations

from barclamp_sdk.errors import InvalidTransition, ValidationError

LIFECYCLE = (
    "discovering",
    "discovered",
    "hardware-installing",
    "hardware-installed",
    "installing",
    "installed",
    "readying",
    "ready",
)
OTHER = ("applying", "recovering", "hardware-updating", "hardware-updated", "problem", "delete-final")
OPERATOR = ("reset", "reinstall", "delete", "update", "reboot", "shutdown", "poweron")
STATES: tuple[str, ...] = LIFECYCLE + OTHER + OPERATOR

#: Where each state may go next (besides problem and the operator actions).
NEXT: dict[str, frozenset[str]] = {
    "discovering": frozenset({"discovered"}),
    "discovered": frozenset({"hardware-installing"}),
    "hardware-installing": frozenset({"hardware-installed"}),
    "hardware-installed": frozenset({"installing"}),
    "installing": frozenset({"installed"}),
    "installed": frozenset({"readying"}),
    "readying": frozenset({"ready", "recovering"}),
    "recovering": frozenset({"readying", "ready"}),
    "ready": frozenset({"readying", "applying", "hardware-updating"}),
    "applying": frozenset({"ready"}),
    "hardware-updating": frozenset({"hardware-updated"}),
    "hardware-updated": frozenset({"readying", "ready"}),
    "problem": frozenset(LIFECYCLE) | {"recovering", "hardware-updating"},
    "reset": frozenset({"discovering", "discovered"}),
    "reinstall": frozenset({"hardware-installing", "installing"}),
    "delete": frozenset({"delete-final"}),
    "update": frozenset({"hardware-updating"}),
    "reboot": frozenset({"readying", "installed", "ready"}),
    "shutdown": frozenset({"poweron"}),
    "poweron": frozenset({"readying", "ready", "discovering"}),
    "delete-final": frozenset(),
}

#: States in which a machine waits for an operator's allocation.
UNALLOCATED_STOP = "discovered"


def check_state(state: str) -> str:
    """Refuse unknown state names, listing the known ones."""
    if state not in STATES:
        raise ValidationError(f"unknown state {state!r}; known states: {', '.join(STATES)}")
    return state


def allowed_next(current: str) -> frozenset[str]:
    """Every state ``current`` may move to."""
    if current == "delete-final":
        return frozenset()
    return NEXT.get(current, frozenset()) | {"problem", current} | frozenset(OPERATOR)


def check_transition(machine: str, current: str, new: str, *, allocated: bool) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    check_state(new)
    if new not in allowed_next(current):
        choices = ", ".join(sorted(allowed_next(current))) or "none (the machine is deleted)"
        raise InvalidTransition(
            f"machine {machine} cannot go from {current} to {new}; allowed next: {choices}"
        )
    if current == UNALLOCATED_STOP and new == "hardware-installing" and not allocated:
        raise InvalidTransition(
            f"machine {machine} is waiting for allocation; allocate it with "
            f"`crowbar machines allocate {machine}` (or commit a proposal that uses it)"
        )
