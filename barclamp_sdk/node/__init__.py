"""What ships to the machines: the Ohai plugin reporting ``crowbar_wall``.

Copy :data:`OHAI_PLUGIN_DIR` to the node (or point Chef's
``ohai.plugin_path`` / ``ohai -d`` at it). Its ``crowbar_wall`` attribute
carries what the model reads from a node and Ohai lacks: the BMC as the node
sees it, the boot disk, the disks used by the OS or a RAID set, and site
facts (rack, hypervisor host) an operator writes to ``/etc/crowbar/wall.json``.
"""

from __future__ import annotations

from pathlib import Path

#: The Ohai plugin directory (``ohai -d OHAI_PLUGIN_DIR``).
OHAI_PLUGIN_DIR: Path = Path(__file__).resolve().parent / "ohai"
