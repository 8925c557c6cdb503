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
        suspects = [row["name"] for row in self.chef.partial_search(
                        "node", MATCH_ALL, {"name": ["name"], "run_list": ["run_list"]})
                    if row.get("name") in wanted
                    and f"role[{node_role_name(row['name'])}]" not in (row.get("run_list") or [])]
        repaired = []
        for name in sorted(suspects):
            if self.add_role(name):
                log.warning("node %s had lost role[%s] from its run list; restored it "
                            "(another tool or chef-client overwrote the node)", name, node_role_name(name))
                repaired.append(name)
        return repaired

    def add_role(self, name: str) -> bool:
        """Put role[crowbar-<node>] first on the node's run list (True if it was missing)."""
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
        return True
