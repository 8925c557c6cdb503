"""What ships to the machines: the Ohai plugin reporting ``crowbar_wall``, and the run handler.

Copy :data:`OHAI_PLUGIN_DIR` to the node (or point Chef's
``ohai.plugin_path`` / ``ohai -d`` at it). Its ``crowbar_wall`` attribute
carries what the model reads from a node and Ohai lacks: the BMC as the node
sees it, the boot disk, the disks used by the OS or a RAID set, and site
facts (rack, hypervisor host) an operator writes to ``/etc/crowbar/wall.json``,
and how the last chef-client run ended (``last_run``), which the Chef report
and exception handler in :data:`RUN_HANDLER` records at the end of each run
(a rollout in waves waits for it; see ``docs/operator.md``).
"""

from __future__ import annotations

from pathlib import Path

#: The Ohai plugin directory (``ohai -d OHAI_PLUGIN_DIR``).
OHAI_PLUGIN_DIR: Path = Path(__file__).resolve().parent / "ohai"

#: The Chef report and exception handler recording ``crowbar_wall.last_run`` (load it from client.rb).
RUN_HANDLER: Path = Path(__file__).resolve().parent / "handlers" / "crowbar_last_run.rb"
