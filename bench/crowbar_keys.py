"""How many of Crowbar's attribute keys a Crowbar admin finds at the same path.

    python bench/crowbar_keys.py [--reference DIR] [--markdown] [--json]

Reads Dell's Crowbar proposal templates (``bc-template-<barclamp>.json``, read
only, in ``../shared/reference/crowbar-templates`` beside the repository) and,
for nova, swift, ceph and eqlx and each template release, lists the leaf key
paths under ``attributes.<barclamp>`` and checks each against the shipped
barclamp's attribute template (``Barclamp().default_attributes()``):

* **same path**: the dotted path exists in the project's template;
* **replaced**: not at the same path, but a designed replacement is listed
  in :data:`EXPLAINED` (it names the project setting that does the job);
* the rest are **gone**, each with its reason in :data:`EXPLAINED`.

Which keys are *meaningful* (the denominator of the coverage figures): every
leaf key except two classes, which are still listed and explained:

1. Crowbar's install-from-source plumbing (:data:`PLUMBING`: ``gitrepo``,
   ``git_instance``, ``git_refspec``, ``use_gitrepo``, ``use_gitbarclamp``,
   ``use_pip_cache``, ``use_virtualenv``, ``pfs_deps``, at any depth): they
   choose how Crowbar's own cookbooks install OpenStack (a git checkout and
   pip instead of distribution packages), not how the service is configured;
2. Ruby expressions the cookbook evaluates on the node (keys ending in
   ``_expr``): code, not settings; the project stores data (swift's
   ``devices``) instead of code in proposals.

Passwords, links to other proposals (``*_instance``) and settings generated at
save time (``cluster_hash``, ``fsid``, cephx keys) all count as meaningful.
eqlx has no template of its own: its keys are the EqualLogic subtrees of
nova@fred (``nova.volume.eqlx``) and cinder (``cinder.volume.eqlx``,
``cinder.volume_defaults.eqlx``), measured against the eqlx barclamp's root.

``--markdown`` prints the section of docs/reference.md (figures and the table
of every key not at the same path); the test suite checks the document has
every line of it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"

#: Crowbar's install-from-source plumbing (not meaningful, see the module doc).
PLUMBING = frozenset({"gitrepo", "git_instance", "git_refspec", "use_gitrepo", "use_gitbarclamp",
                      "use_pip_cache", "use_virtualenv", "pfs_deps"})

#: (barclamp, release label, template folder, subtree of the template's attributes measured).
SOURCES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("nova", "fred", "barclamp-nova@fred", ("nova",)),
    ("nova", "mesa-1.6", "barclamp-nova@mesa-1.6", ("nova",)),
    ("nova", "pebbles", "barclamp-nova@pebbles", ("nova",)),
    ("nova", "roxy", "barclamp-nova@roxy", ("nova",)),
    ("nova", "master", "crowbar-openstack@master", ("nova",)),
    ("swift", "fred", "barclamp-swift@fred", ("swift",)),
    ("swift", "mesa-1.6", "barclamp-swift@mesa-1.6", ("swift",)),
    ("swift", "pebbles", "barclamp-swift@pebbles", ("swift",)),
    ("swift", "roxy", "barclamp-swift@roxy", ("swift",)),
    ("swift", "master", "crowbar-openstack@master", ("swift",)),
    ("ceph", "hydrogen", "barclamp-ceph@hydrogen", ("ceph",)),
    ("ceph", "pebbles", "barclamp-ceph@pebbles", ("ceph",)),
    ("ceph", "stoney", "barclamp-ceph@stoney", ("ceph",)),
    ("ceph", "suse-cloud-1.0", "barclamp-ceph@suse-cloud-1.0", ("ceph",)),
    ("ceph", "ceph-master", "ceph-barclamp-ceph@master", ("ceph",)),
    ("ceph", "crowbar-master", "crowbar-ceph@master", ("ceph",)),
    ("eqlx", "nova@fred", "barclamp-nova@fred", ("nova", "volume", "eqlx")),
    ("eqlx", "cinder@mesa-1.6", "barclamp-cinder@mesa-1.6", ("cinder", "volume", "eqlx")),
    ("eqlx", "cinder@pebbles", "barclamp-cinder@pebbles", ("cinder", "volume_defaults", "eqlx")),
    ("eqlx", "cinder@roxy", "barclamp-cinder@roxy", ("cinder", "volume", "eqlx")),
    ("eqlx", "cinder@master", "crowbar-openstack@master", ("cinder", "volume_defaults", "eqlx")),
)

#: The releases the project promises >= 80 % same-path coverage for.
PROMISED = {"nova": ("fred", "mesa-1.6"), "swift": ("fred", "mesa-1.6"), "ceph": ("hydrogen", "pebbles")}
TARGET = 80.0

_PLUMBING_WHY = "gone: Crowbar's install-from-source plumbing (git checkout and pip); the project configures services, not how cookbooks install them"
_EXPR_WHY = "gone: a Ruby expression evaluated on the node; proposals hold data, not code"

#: (barclamp, Crowbar key) -> what replaces it ("replaced: `project.path` ...") or why it is gone.
#: A replacement names an existing project setting first, in backticks.
EXPLAINED: dict[tuple[str, str], str] = {
    # nova
    ("nova", "db.database_instance"): "replaced: `db.mysql_instance` (the link to the database proposal, fred's name)",
    ("nova", "database_instance"): "replaced: `db.mysql_instance` (the link to the database proposal, fred's name)",
    ("nova", "networking_backend"): "gone: the project deploys nova-network (`network.*`); there is no quantum/neutron barclamp to choose",
    ("nova", "rbd.user"): "replaced: `volume.rbd.user` (the ceph client of the rbd volume backend)",
    ("nova", "rbd.secret_uuid"): "replaced: `volume.rbd.secret_uuid` (generated on save when volumes are rbd)",
    # swift
    ("swift", "service_user"): "replaced: `keystone_service_user` (the name in fred, mesa-1.6 and roxy)",
    ("swift", "admin_ip_expr"): f"replaced: `swift-proxy` and `swift-storage` placement; the admin network address comes from the node ({_EXPR_WHY[6:]})",
    ("swift", "storage_ip_expr"): f"replaced: `devices` (storage machines and their disks are data) ({_EXPR_WHY[6:]})",
    ("swift", "public_ip_expr"): f"replaced: `swift-proxy` placement; the public address comes from the node ({_EXPR_WHY[6:]})",
    ("swift", "disk_enum_expr"): f"replaced: `devices` (each storage machine's disks, listed) ({_EXPR_WHY[6:]})",
    ("swift", "disk_test_expr"): f"replaced: `devices` (only the disks listed are used) ({_EXPR_WHY[6:]})",
    ("swift", "disk_zone_assign_expr"): f"replaced: `devices` (each disk's zone and weight; zones balanced over racks) ({_EXPR_WHY[6:]})",
    # ceph
    ("ceph", "disk-mode"): "replaced: `disk_mode` (the name from pebbles on)",
    ("ceph", "devices"): "replaced: `osd_devices` (the disks of each OSD machine, per machine)",
    ("ceph", "config.mon_initial_members"): "replaced: `ceph-mon` placement (the monitors are the initial members)",
    ("ceph", "config.osds_in_total"): "gone: computed by Crowbar at apply time; the project lists `osd_devices`",
    ("ceph", "config.replicas_number"): "replaced: `pool_size`",
    # eqlx (keys relative to the EqualLogic subtree)
    ("eqlx", "use_chap_auth"): "replaced: `eqlx_use_chap` (Crowbar's name before master)",
    ("eqlx", "chap_username"): "replaced: `eqlx_chap_login` (Crowbar's name before master)",
    ("eqlx", "chap_password"): "replaced: `eqlx_chap_password` (Crowbar's name before master)",
}

#: (barclamp, key prefix) -> reason, for whole subtrees of the later (master) templates.
EXPLAINED_PREFIX: dict[tuple[str, str], str] = {
    ("nova", "zvm."): "gone: the z/VM hypervisor is not one of the project's three architectures (kvm, xenserver, vcenter)",
    ("nova", "ec2-api."): "gone: the ec2-api service (a separate project since Mitaka) is not deployed",
    ("nova", "api_db."): "gone: nova's API database (Newton and later); the project configures one database, `db`",
    ("nova", "placement_db."): "gone: the placement database (Newton and later); the project configures one database, `db`",
    ("nova", "compute."): "gone: CPU models per architecture (aarch64, s390x, x86_64); not carried",
    ("nova", "ha_rate_limit."): "gone: rate limits of Crowbar's pacemaker HA proxy; the project has no HA barclamp",
    ("nova", "resource_limits."): "gone: systemd limits of the services; not carried",
    ("ceph", "calamari."): "gone: the Calamari management server is not deployed",
}

#: Releases after Crowbar 1.x (SUSE's crowbar-openstack and crowbar-ceph master): keys they added
#: without a more specific entry above get this reason.
LATER = ("master", "crowbar-master")
_LATER_WHY = "gone: added after Crowbar 1.x (crowbar-openstack / crowbar-ceph master); not carried"


@dataclass
class Key:
    path: str
    meaningful: bool
    status: str  # same | replaced | gone | unexplained
    why: str = ""


@dataclass
class Measure:
    barclamp: str
    release: str
    folder: str
    subtree: tuple[str, ...] = ()
    keys: list[Key] = field(default_factory=list)

    def count(self, *statuses: str, meaningful: bool = True) -> int:
        return sum(1 for k in self.keys if k.status in statuses and (k.meaningful or not meaningful))

    @property
    def meaningful(self) -> int:
        return sum(1 for k in self.keys if k.meaningful)

    @property
    def same_path_pct(self) -> float:
        return 100.0 * self.count("same") / self.meaningful if self.meaningful else 100.0

    @property
    def with_replacements_pct(self) -> float:
        return 100.0 * self.count("same", "replaced") / self.meaningful if self.meaningful else 100.0

    @property
    def all_keys_same_path_pct(self) -> float:
        return 100.0 * self.count("same", meaningful=False) / len(self.keys) if self.keys else 100.0


def leaves(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Leaf key paths of a JSON value (an empty object is a leaf)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaves(v, (*prefix, k))]
    return [prefix]


def has_path(document: Any, path: str) -> bool:
    """Whether the dotted path exists in a JSON document."""
    node = document
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def is_meaningful(path: str) -> bool:
    last = path.split(".")[-1]
    return last not in PLUMBING and not last.endswith("_expr")


def project_templates() -> dict[str, dict[str, Any]]:
    """Each measured barclamp's attribute template, as a new proposal has it."""
    sys.path.insert(0, str(ROOT))
    from barclamps.ceph import Ceph
    from barclamps.eqlx import Eqlx
    from barclamps.nova import Nova
    from barclamps.swift import Swift

    return {b.name: b.default_attributes() for b in (Nova(), Swift(), Ceph(), Eqlx())}


def template_file(reference: Path, folder: str, barclamp_file: str) -> Path:
    directory = reference / "crowbar-templates" / folder
    found = sorted(directory.glob(f"*template-{barclamp_file}.json"))
    if not found:
        raise FileNotFoundError(f"no template-{barclamp_file}.json in {directory}")
    return found[0]


def measure(reference: Path = REFERENCE) -> list[Measure]:
    """Every (barclamp, release) of :data:`SOURCES`, each key classified."""
    if not (reference / "crowbar-templates").is_dir():
        raise FileNotFoundError(f"Crowbar's templates are not in {reference / 'crowbar-templates'}: "
                                "put a copy of shared/reference beside the repository")
    ours = project_templates()
    results = []
    for barclamp, release, folder, subtree in SOURCES:
        document = json.loads(template_file(reference, folder, subtree[0]).read_text())
        node = document["attributes"]
        for part in subtree:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        result = Measure(barclamp, release, folder, subtree)
        for parts in leaves(node) if node else []:
            path = ".".join(parts)
            key = Key(path, is_meaningful(path), "same")
            if not has_path(ours[barclamp], path):
                why = EXPLAINED.get((barclamp, path))
                if why is None and parts[-1] in PLUMBING:
                    why = _PLUMBING_WHY
                if why is None:
                    why = next((w for (b, prefix), w in EXPLAINED_PREFIX.items()
                                if b == barclamp and path.startswith(prefix)), None)
                if why is None and release in LATER:
                    why = _LATER_WHY
                if why is None:
                    key.status = "unexplained"
                else:
                    key.status = "replaced" if why.startswith("replaced:") else "gone"
                    key.why = why
            result.keys.append(key)
        results.append(result)
    return results


def markdown(results: list[Measure]) -> str:
    """The coverage section of docs/reference.md."""
    lines = ["| Barclamp | Template | Leaf keys | Meaningful | Same path | With designed replacements | Same path, all keys |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        where = r.folder if r.barclamp != "eqlx" else f"{r.folder} (`{'.'.join(r.subtree)}`)"
        lines.append(f"| {r.barclamp} | {where} | {len(r.keys)} | {r.meaningful} | "
                     f"{r.count('same')} ({r.same_path_pct:.0f}%) | "
                     f"{r.count('same', 'replaced')} ({r.with_replacements_pct:.0f}%) | "
                     f"{r.all_keys_same_path_pct:.0f}% |")
    lines += ["", "| Barclamp | Crowbar key | Templates | Replaced by, or why it is gone |", "|---|---|---|---|"]
    rows: dict[tuple[str, str], list[str]] = {}
    whys: dict[tuple[str, str], str] = {}
    for r in results:
        for k in r.keys:
            if k.status != "same":
                rows.setdefault((r.barclamp, k.path), []).append(r.release)
                whys[(r.barclamp, k.path)] = k.why or "UNEXPLAINED"
    for (barclamp, path), releases in rows.items():
        lines.append(f"| {barclamp} | `{path}` | {', '.join(releases)} | {whys[(barclamp, path)]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the shared/reference directory")
    parser.add_argument("--markdown", action="store_true", help="print the docs/reference.md section")
    parser.add_argument("--json", action="store_true", help="print every key's classification as JSON")
    args = parser.parse_args(argv)
    try:
        results = measure(args.reference)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.markdown:
        print(markdown(results), end="")
    elif args.json:
        print(json.dumps([{"barclamp": r.barclamp, "release": r.release, "keys": [k.__dict__ for k in r.keys]}
                          for r in results], indent=1))
    else:
        for r in results:
            print(f"{r.barclamp:6} {r.release:15} keys {len(r.keys):3}  meaningful {r.meaningful:3}  "
                  f"same path {r.same_path_pct:5.1f}%  with replacements {r.with_replacements_pct:5.1f}%  "
                  f"(all keys {r.all_keys_same_path_pct:5.1f}%)")
        for r in results:
            for k in r.keys:
                if k.status == "unexplained":
                    print(f"unexplained: {r.barclamp} {r.release} {k.path}")
    short = [f"{r.barclamp}@{r.release} {r.same_path_pct:.0f}%" for r in results
             if r.release in PROMISED.get(r.barclamp, ()) and r.same_path_pct < TARGET]
    if short:
        print(f"below {TARGET:.0f}% at the same path: {', '.join(short)}", file=sys.stderr)
    return 1 if short or any(k.status == "unexplained" for r in results for k in r.keys) else 0


if __name__ == "__main__":
    sys.exit(main())
