"""What a child of the crash-at-every-step harness costs to start: a new interpreter or a fork.

Starts a local goiardi (PostgreSQL unless --memory), then runs N children
that each connect and run one edit of a proposal that does not exist (one
request, refused), first as ``python -m barclamp_sdk.testing.crashsteps``
(the imports every time), then forked from the harness's launcher (imported
once, its start counted): seconds per child each way, and the ratio.

    python bench/crash_children.py [--children 10] [--memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.testing.crashsteps import _Launcher

ACTION = ["nova", "missing", "edit", "debug=true"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=10)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalChefServer(tmp, memory=args.memory) as server:
        env = {**os.environ, **server.environment()}
        started = time.perf_counter()
        for _ in range(args.children):
            done = subprocess.run([sys.executable, "-m", "barclamp_sdk.testing.crashsteps", *ACTION],
                                  env=env, capture_output=True)
            assert done.returncode == 1 and b"NotFoundError" in done.stderr, done.stderr
        interpreter = (time.perf_counter() - started) / args.children
        launcher = _Launcher(env)
        try:
            started = time.perf_counter()
            for _ in range(args.children):
                forked = launcher.run(ACTION, env, timeout=120)
                assert forked.returncode == 1 and "NotFoundError" in forked.stderr, forked.stderr
            fork = (time.perf_counter() - started) / args.children
        finally:
            launcher.close()
    print(json.dumps({"children": args.children, "interpreter_s": round(interpreter, 3),
                      "forked_s": round(fork, 3), "ratio": round(interpreter / fork, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
