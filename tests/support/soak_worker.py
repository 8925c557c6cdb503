"""One actor of the soak test, in its own process, until a deadline.

    python -m tests.support.soak_worker ROLE DEADLINE LOG [ARGS...]

Roles:
  ``editor BARCLAMP KEY``   set KEY of BARCLAMP/default to a new value, commit
                            every third edit;
  ``chef-client``           chef-client runs (whole-node saves) on random machines;
  ``transitions``           machines leave ready (readying) and come back.

Every acknowledged action is appended to LOG as one JSON line, so the test
can check afterwards that none was lost.
"""

from __future__ import annotations

import json
import random
import sys
import time

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient, ChefConfig
from barclamp_sdk.errors import LockTimeout
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


def main() -> int:
    role, deadline, log_path, *args = sys.argv[1:]
    crowbar = Crowbar(ChefClient(ChefConfig.load()), barclamps=TEST_BARCLAMPS, secret=TEST_SECRET,
                      lock_lease=10.0, lock_timeout=120.0)
    fleet = Fleet(crowbar.chef, crowbar=crowbar)
    machines = [m.name for m in crowbar.machines.list()]
    rng = random.Random(f"{role}{args}")
    count = 0
    with open(log_path, "a") as log:
        def record(**entry: object) -> None:
            log.write(json.dumps(entry) + "\n")
            log.flush()

        while time.time() < float(deadline):
            count += 1
            if role == "editor":
                barclamp, key = args
                value = str(2000 + count) if key in ("port", "size") else f"{key}-{count}"
                saved = crowbar.proposals.set(barclamp, "default", {key: value})
                record(action="edit", barclamp=barclamp, key=key, value=value, revision=saved.revision)
                if count % 3 == 0:
                    try:
                        result = crowbar.proposals.commit(barclamp, "default")
                    except LockTimeout:  # a long queue of commits: try again next round
                        record(action="commit", barclamp=barclamp, status="lock-timeout")
                        continue
                    record(action="commit", barclamp=barclamp, status=result.status, revision=result.revision)
            elif role == "chef-client":
                name = rng.choice(machines)
                fleet.converge(name, pause=0.01)
                record(action="converge", machine=name)
            elif role == "transitions":
                name = rng.choice(machines)
                crowbar.machines.transition(name, "readying")
                fleet.converge(name)
                crowbar.machines.transition(name, "ready")
                record(action="transition", machine=name)
            else:
                raise SystemExit(f"unknown role {role}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
