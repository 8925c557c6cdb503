#!/usr/bin/env python3
"""Show what is queued, and why, one proposal per paragraph (for mail or chat)."""

import sys

import barclamp_sdk


def main() -> int:
    try:
        items = barclamp_sdk.connect().queue.explain()
    except barclamp_sdk.CrowbarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not items:
        print("nothing is queued")
        return 0
    for item in items:
        print(f"{item['barclamp']}/{item['inst']} (revision {item.get('revision')}, queued {item.get('queued_at')}):")
        for reason in item["reasons"]:
            print(f"  - {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
