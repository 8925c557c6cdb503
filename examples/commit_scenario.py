#!/usr/bin/env python3
"""Create or update every proposal of a scenario file, then commit them in dependency order.

    ./commit_scenario.py scenario.yaml

The same as ``crowbar batch apply scenario.yaml``, as a script you can adapt
(for instance to refuse files that touch barclamps you do not own).
"""

import sys

import barclamp_sdk


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: commit_scenario.py SCENARIO.yaml", file=sys.stderr)
        return 2
    try:
        crowbar = barclamp_sdk.connect()
        with open(sys.argv[1]) as handle:
            scenario = barclamp_sdk.parse_scenario(handle.read(), source=sys.argv[1])
        report = crowbar.batch.apply(scenario)
    except (barclamp_sdk.CrowbarError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 3 if report.queued else 0


if __name__ == "__main__":
    sys.exit(main())
