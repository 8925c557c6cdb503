"""The library's only write to a node: ``role[crowbar-<node>]`` on its run list.

Checked, and repaired with a warning, whenever a commit touches a machine.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import NotFound
from barclamp_sdk.model.cluster import MATCH_ALL
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.model.parallel import run_parallel
from barclamp_sdk.model.reader import DIRECT_READ_LIMIT

log = logging.getLogger(__name__)


class NodeRunLists:
    """Keeps ``role[crowbar-<node>]`` first on machines' run lists."""

    def __init__(self, chef: ChefClient) -> None:
        self.chef = chef

    def check(self, names: Iterable[str]) -> list[str]:
        """Check nodes' run lists hold their crowbar role; repair (warned) if not.

        One paged search reads the run lists (``*:*``, the query goiardi
        answers fastest); a node whose run list lacks its role is confirmed
        from its object endpoint (search may lag) before it is repaired.
        Returns the repaired nodes.
        """
        wanted = set(names)
        if not wanted:
            return []
        if len(wanted) <= DIRECT_READ_LIMIT:  # few: read each node (search may not show a fresh overwrite)
            names = sorted(wanted)
            repaired = run_parallel(lambda name: self.add_role(name, warn=True), names, workers=8, name="run-lists")
            return [name for name, fixed in zip(names, repaired) if fixed]
        suspects = [row["name"] for row in self.chef.partial_search(
                        "node", MATCH_ALL, {"name": ["name"], "run_list": ["run_list"]})
                    if row.get("name") in wanted
                    and f"role[{node_role_name(row['name'])}]" not in (row.get("run_list") or [])]
        return [name for name in sorted(suspects) if self.add_role(name, warn=True)]

    def add_role(self, name: str, *, warn: bool = False) -> bool:
        """Put role[crowbar-<node>] first on the node's run list (True if it was missing).

        ``warn``: it was there before (a repair), so say so.
        """
        try:
            node = self.chef.nodes.get(name)
        except NotFound:
            return False
        entry = f"role[{node_role_name(name)}]"
        run_list = list(node.get("run_list") or [])
        if entry in run_list:
            return False
        node["run_list"] = [entry, *run_list]
        self.chef.nodes.update(name, node)
        if warn:
            log.warning("node %s had lost role[%s] from its run list; restored it "
                        "(another tool or chef-client overwrote the node)", name, node_role_name(name))
        return True
