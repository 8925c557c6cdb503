"""Running the real ``crowbar`` command with its stderr on a pseudo-terminal (where progress shows)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading


def in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """``crowbar ARGS`` with its stderr on a pseudo-terminal (where progress shows): code, stdout, terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "barclamp_sdk.cli", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL, env={**env, "COLUMNS": "160"})
    os.close(slave)
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=600)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(seen).decode(errors="replace")
