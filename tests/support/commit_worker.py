"""Run in a separate process by the concurrency tests: commit one proposal.

    python -m tests.support.commit_worker BARCLAMP NAME START_AT
"""

from __future__ import annotations

import json
import sys
import time

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient, ChefConfig
from barclamp_sdk.testing.pytest_plugin import TEST_SECRET
from tests.support.widgets import TEST_BARCLAMPS


def main() -> int:
    barclamp, name, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    lease = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    crowbar = Crowbar(ChefClient(ChefConfig.load()), barclamps=TEST_BARCLAMPS, secret=TEST_SECRET,
                      lock_lease=lease)
    time.sleep(max(0.0, start_at - time.time()))
    result = crowbar.proposals.commit(barclamp, name)
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
