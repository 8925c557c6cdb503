"""Run in a separate process by the network tests: discover machines as their boot scripts would.

    python -m tests.support.network_worker START_AT NAME...

Each machine goes through ``discovering`` and ``discovered`` (the network
barclamp allocates its addresses there); prints one JSON line: machine -> state.
"""

from __future__ import annotations

import json
import sys
import time

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient, ChefConfig
from barclamp_sdk.testing.fleet import Fleet
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


def main() -> int:
    start_at, names = float(sys.argv[1]), sys.argv[2:]
    chef = ChefClient(ChefConfig.load())
    crowbar = Crowbar(chef, barclamps=TEST_BARCLAMPS, secret=TEST_SECRET)
    fleet = Fleet(chef, crowbar=crowbar)
    time.sleep(max(0.0, start_at - time.time()))
    states = fleet.boot(names, until="discovered")
    print(json.dumps(states if isinstance(states, dict) else {n: crowbar.machines.state(n) for n in names}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
