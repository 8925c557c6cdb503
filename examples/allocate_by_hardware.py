#!/usr/bin/env python3
"""Allocate every discovered machine of one hardware type.

    ./allocate_by_hardware.py "PowerEdge R640"

Machines pause after discovery until allocated; this lets all the servers of
one model go on to install, and leaves the rest waiting.
"""

import sys

import barclamp_sdk


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    model = sys.argv[1].lower()
    try:
        crowbar = barclamp_sdk.connect()
        waiting = [m.name for m in crowbar.machines.inventory()
                   if m.state == "discovered" and not m.allocated and model in m.product.lower()]
        allocated = crowbar.machines.allocate(waiting) if waiting else []
    except barclamp_sdk.CrowbarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"allocated {len(allocated)} machine(s) of type {sys.argv[1]!r}")
    for name in allocated:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
