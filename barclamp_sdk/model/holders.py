"""Whether a lock's holder is a dead process of this host (taken over at once, no lease wait).

Every lock item records the process that took it (:func:`process_identity`):
the host name, the kernel's boot id, the pid namespace, the pid and the
process's start time (in clock ticks since boot). A holder is known dead
(:func:`holder_dead`) only when all of host, boot and pid namespace are this
process's own, and its pid no longer runs, or runs a process that started at
another time (the pid was reused), or is a zombie (it can never write
again). Anything else, a holder on another host or in another container
(another pid namespace), or an item without the record, is judged by its
lease alone.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any

#: The lock item key holding :func:`process_identity`.
PROCESS_KEY = "process"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _start_time(pid: int) -> tuple[int, str] | None:
    """(start time in clock ticks since boot, state letter) of ``pid``, or None if it does not run."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return int(fields[19]), fields[0]


@functools.lru_cache(maxsize=1)
def _this_host() -> tuple[str, str, str]:
    boot = (_read("/proc/sys/kernel/random/boot_id") or "").strip()
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return socket.gethostname(), boot, pidns


@functools.lru_cache(maxsize=4)
def _identity(pid: int) -> dict[str, Any]:
    host, boot, pidns = _this_host()
    started = _start_time(pid)
    return {"host": host, "boot": boot, "pidns": pidns, "pid": pid, "start": started[0] if started else None}


def process_identity() -> dict[str, Any]:
    """This process, as lock items record it: host, boot id, pid namespace, pid, start time."""
    return dict(_identity(os.getpid()))


def holder_dead(item: dict[str, Any]) -> bool:
    """Whether ``item``'s holder is a process of this host (same boot, same pid namespace)
    that no longer runs: gone, a zombie, or its pid reused by a later process."""
    record = item.get(PROCESS_KEY)
    if not isinstance(record, dict):
        return False
    host, boot, pidns = _this_host()
    if not boot or not pidns or (record.get("host"), record.get("boot"), record.get("pidns")) != (host, boot, pidns):
        return False
    pid, start = record.get("pid"), record.get("start")
    if not isinstance(pid, int) or not isinstance(start, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return False
    now = _start_time(pid)
    return now is None or now[0] != start or now[1] in ("Z", "X")
