"""Server-mastered addresses: one data bag item per allocated address.

Crowbar kept every allocation of a network in one item under one global
lock. Here each allocated address is its own item of ``crowbar_addresses``,
its id derived from the network and the address (``admin-192_168_124_81``):
allocating is one atomic create (the server answers 409 when the id exists),
so two allocators, in any number of processes, can never hand out one
address, and no allocation waits for another of a different machine.

A machine's allocations are also recorded in its ``crowbar-<node>`` role
under ``crowbar.network.<network>``, with Crowbar's keys (address, netmask,
broadcast, subnet, vlan, use_vlan, conduit, router) plus ``users`` (the
proposals that need it): the role is the index by machine, read from its
object endpoint (no search lag). Every allocation and release of a machine
runs under the machine's shard lock. An allocation (:meth:`AddressBook.allocate`,
or a commit's, :class:`CommitAddresses`) reads the roles first, then claims
the new addresses in machine-name order from a place of the range that
depends only on the user (the proposal) and the machines, then writes the
roles: so the same machines get the same addresses whichever threads run
first, and a run resuming a crashed one (adopting its claims) ends as an
undisturbed run would.

One invariant makes every step safe to interrupt: *a role names an address
only while the machine's item for it exists*. So an item is created before
the role names it, and the role stops naming it before the item is deleted:

* allocate: create the item, then write the role. A crash in between leaves
  an idle item owned by the machine that no role names: never used twice (its
  id is taken), found by :meth:`AddressBook.check` and freed with ``repair``
  (``crowbar network check --repair``), which re-checks each under the
  machine's shard lock, where allocations run. A create that meets an item
  the same machine already holds (two runs for one machine) adopts it.
* free: write the role without the entry, then delete the item; a crash in
  between leaves the same kind of idle item.
* a machine that keeps its address needs no item read: the role's word is
  enough, so recommitting reads each role once and writes nothing.

Network definitions come from the committed ``network`` proposal
(:data:`NETWORK_BARCLAMP`), in Crowbar's shape; :class:`NetworkSpec` reads one.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import Conflict, CrowbarError, NotFound, NotFoundError, ValidationError
from barclamp_sdk.model.cluster import MachineRecord, record_from_role
from barclamp_sdk.model.jsondoc import now_iso
from barclamp_sdk.model.naming import check_node_name
from barclamp_sdk.model.noderoles import NodeRoleStore, crowbar_data
from barclamp_sdk.model.parallel import run_parallel

log = logging.getLogger(__name__)

ADDRESSES_BAG = "crowbar_addresses"
#: Virtual addresses by name: ``<network>--<name>`` -> address.
VIPS_BAG = "crowbar_vips"
#: The barclamp whose committed proposal defines the networks.
NETWORK_BARCLAMP = "network"
NETWORK_PROPOSAL = "default"
#: The keys of an allocation in ``crowbar.network.<network>`` (Crowbar's).
ENTRY_KEYS = ("address", "netmask", "broadcast", "subnet", "vlan", "use_vlan", "conduit", "router")
#: Ranges machines get addresses from, the first present.
MACHINE_RANGES = ("host", "router")
#: The owner recorded for a virtual address ``name``.
VIP_PREFIX = "vip:"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def item_id(network: str, address: str) -> str:
    """The id of the item holding ``address`` of ``network`` (``admin-192_168_124_81``)."""
    return f"{network}-{address.replace('.', '_').replace(':', '_')}"


@dataclass(frozen=True)
class NetworkSpec:
    """One network in Crowbar's shape (``attributes.network.networks.<name>``)."""

    name: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    broadcast: str
    router: str | None
    vlan: int
    use_vlan: bool
    conduit: str
    ranges: Mapping[str, tuple[IPAddress, IPAddress]]

    @classmethod
    def parse(cls, name: str, data: Mapping[str, Any]) -> NetworkSpec:
        """A network from its attributes (ValidationError naming the bad key)."""
        try:
            subnet = ipaddress.ip_network(f"{data['subnet']}/{data['netmask']}", strict=True)
            ranges = {r: (ipaddress.ip_address(v["start"]), ipaddress.ip_address(v["end"]))
                      for r, v in (data.get("ranges") or {}).items()}
        except (KeyError, ValueError, TypeError) as exc:
            raise ValidationError(f"network {name}: subnet, netmask or ranges are not addresses ({exc})") from None
        return cls(name=name, subnet=subnet, broadcast=str(data.get("broadcast") or subnet.broadcast_address),
                   router=str(data["router"]) if data.get("router") else None, vlan=int(data.get("vlan") or 0),
                   use_vlan=bool(data.get("use_vlan")), conduit=str(data.get("conduit") or ""), ranges=ranges)

    def machine_range(self) -> str:
        """The range machines get addresses from: ``host``, else ``router`` (Crowbar's nova_fixed)."""
        for name in MACHINE_RANGES:
            if name in self.ranges:
                return name
        raise ValidationError(f"network {self.name} has no range for machines ({' or '.join(MACHINE_RANGES)}); "
                              f"its ranges: {', '.join(sorted(self.ranges)) or 'none'}")

    def addresses(self, range_name: str, *, first: int = 0) -> Iterator[str]:
        """Every address of range ``range_name``, in order, from its ``first``-th on (then round from
        its start): lazily, so a range of millions of addresses is never a list."""
        start, size = self.span(range_name)
        for offset in range(size):
            yield str(ipaddress.ip_address(start + (first + offset) % size))

    def span(self, range_name: str) -> tuple[int, int]:
        """Range ``range_name``'s first address (as a number) and its number of addresses."""
        if range_name not in self.ranges:
            raise ValidationError(f"network {self.name} has no range {range_name!r}; "
                                  f"its ranges: {', '.join(sorted(self.ranges)) or 'none'}")
        start, end = self.ranges[range_name]
        return int(start), max(0, int(end) - int(start) + 1)

    def entry(self, address: str) -> dict[str, Any]:
        """What the machine's role records for ``address`` (Crowbar's keys)."""
        return {"address": address, "netmask": str(self.subnet.netmask), "broadcast": self.broadcast,
                "subnet": str(self.subnet.network_address), "vlan": self.vlan, "use_vlan": self.use_vlan,
                "conduit": self.conduit, "router": self.router}


@dataclass
class AllocationReport:
    """What an allocation did, machine by machine."""

    network: str
    #: machine -> address newly allocated.
    allocated: dict[str, str] = field(default_factory=dict)
    #: machine -> address it already had (kept).
    kept: dict[str, str] = field(default_factory=dict)
    #: machine -> why it got no address.
    refused: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"network": self.network, "allocated": self.allocated, "kept": self.kept, "refused": self.refused}


class _Candidates:
    """Free addresses of one range, shared by the threads of one allocation."""

    def __init__(self, chef: ChefClient, spec: NetworkSpec, range_name: str, start_key: str) -> None:
        self.chef = chef
        self.spec = spec
        self.range_name = range_name
        self.size = spec.span(range_name)[1]
        self._guard = threading.Lock()
        self._free: Iterator[str] | None = None
        self._start = int(hashlib.sha256(start_key.encode()).hexdigest()[:12], 16)
        self.refreshed = False
        #: Whether a crashed holder's lock was taken over (then its claims are looked for).
        self.recovering: Callable[[], bool] = lambda: False
        self._owned: dict[str, str] | None = None

    def orphan_of(self, machine: str) -> str | None:
        """After a takeover: an address ``machine`` holds an item for though its role names none
        (a crash came between the create and the role write), adopted instead of a new one."""
        if not self.recovering():
            return None
        with self._guard:
            if self._owned is None:
                rows = AddressBook.read_items(self.chef, self.spec.name)
                self._owned = {}
                for row in sorted(rows, key=lambda r: _sort_key(str(r["address"])), reverse=True):
                    self._owned[str(row["machine"])] = str(row["address"])
            return self._owned.pop(machine, None)

    def _load(self) -> Iterator[str]:
        """The free addresses, lazily, from a place of the range that depends on the start key
        (:func:`_start_key`: concurrent allocators of different machines start apart, fewer
        collisions)."""
        taken = _taken_ids(self.chef)
        network = self.spec.name
        first = self._start % self.size if self.size else 0
        return (a for a in self.spec.addresses(self.range_name, first=first) if item_id(network, a) not in taken)

    def take(self) -> str | None:
        """The next address not known to be taken (None: the range is full)."""
        with self._guard:
            if self._free is None:
                self._free = self._load()
            address = next(self._free, None)
            if address is None and not self.refreshed:  # others may have freed some meanwhile
                self.refreshed = True
                self._free = self._load()
                address = next(self._free, None)
            return address

    def full_reason(self) -> str:
        start, end = self.spec.ranges[self.range_name]
        return (f"range {self.range_name} of network {self.spec.name} ({start}-{end}, "
                f"{self.size} addresses) is full")


class AddressBook:
    """Allocate, find and free machines' addresses (see the module doc)."""

    def __init__(self, chef: ChefClient, roles: NodeRoleStore,
                 networks: Callable[[], Mapping[str, Mapping[str, Any]]], *, concurrency: int = 8) -> None:
        self.chef = chef
        self.roles = roles
        #: The committed networks, by name, in Crowbar's shape.
        self._networks = networks
        self.concurrency = concurrency

    # -- networks --------------------------------------------------------------------------

    def networks(self) -> dict[str, NetworkSpec]:
        """The committed networks (empty when the network proposal is not committed)."""
        return {name: NetworkSpec.parse(name, data) for name, data in (self._networks() or {}).items()}

    def network(self, name: str) -> NetworkSpec:
        """One committed network (NotFoundError saying what to commit)."""
        networks = self.networks()
        if name not in networks:
            if not networks:
                raise NotFoundError(f"no network {name!r}: the {NETWORK_BARCLAMP} proposal is not committed; "
                                    f"commit it with `crowbar {NETWORK_BARCLAMP} proposal commit {NETWORK_PROPOSAL}`")
            raise NotFoundError(f"no network {name!r}; networks: {', '.join(sorted(networks))}")
        return networks[name]

    # -- allocation ------------------------------------------------------------------------

    def allocate(self, network: str, machines: Iterable[str], *, user: str, range_name: str | None = None,
                 progress: Callable[[int], None] | None = None) -> AllocationReport:
        """Give every machine one address of ``network`` (kept if it has one); ``user`` needs it.

        Idempotent: a machine keeps its address across calls; ``user`` (a
        proposal key) is recorded so that :meth:`release` frees the address
        only when no user is left. Machines that get none are in ``refused``.
        """
        spec = self.network(network)
        range_name = range_name or spec.machine_range()
        names = sorted(set(machines))
        for name in names:
            check_node_name(name)
        if not names:
            return AllocationReport(network)
        purpose = f"allocate {network} addresses"
        with self.roles.locked(names, purpose) as held:
            roles = held.fetch()
            present = {n: r for n, r in roles.items() if r is not None}
            # The roles are read first, so that the machines lacking an address get theirs in
            # name order, as a commit for the same user picks them, whatever order the writes
            # run in; a crashed holder's claims (its lock taken over) are adopted.
            claims = AddressClaims(self, user, {network: set(present)}, ranges={network: range_name},
                                   specs={network: spec},
                                   recovering=lambda: self.roles.locks.took_over_any(lock.name for lock in held.locks))
            try:
                claims.claim_ahead({n: record_from_role(r) for n, r in present.items()})
                updated = self.roles.update_held(
                    held, roles, {n: functools.partial(claims.apply, n) for n in names},
                    purpose=purpose, progress=progress)
            finally:
                claims.discard_unused()
        report = claims.reports[network]
        for name in updated.missing:
            report.refused[name] = f"{name} is not a machine (no role {name})"
        for name, error in updated.failed.items():
            report.refused[name] = str(error)
        return report

    def assign(self, spec: NetworkSpec, machine: str, role: dict[str, Any], user: str, candidates: _Candidates,
               report: AllocationReport, guard: threading.Lock, *, claimed: str | None = None) -> bool:
        """Give ``machine`` an address of ``spec`` in its ``role`` (kept if it has one); True if the role changed.

        A mutation of a role read under the machine's shard lock: a new
        address is claimed (one atomic create) before the role names it.
        ``claimed``: an address already claimed for ``machine`` before its
        role was read (used if the role names none, freed if it does).
        """
        network = spec.name
        table = crowbar_data(role).setdefault("network", {})
        entry = table.get(network) if isinstance(table.get(network), dict) else None
        if entry and entry.get("address"):  # the role names it only while its item exists
            if claimed is not None and claimed != str(entry["address"]):
                self._delete(network, machine, claimed)  # claimed ahead for nothing: the role has one
            users = sorted(set(entry.get("users") or []) | {user})
            wanted = {**spec.entry(str(entry["address"])), "users": users}
            with guard:
                report.kept[machine] = str(entry["address"])
            if entry == wanted:
                return False
            table[network] = wanted
            return True
        address = (claimed or candidates.orphan_of(machine)
                   or self._claim(spec, machine, candidates))
        if address is None:
            with guard:
                report.refused[machine] = candidates.full_reason()
            if entry:  # its old address went to another machine: the stale entry goes
                table.pop(network, None)
                return True
            return False
        table[network] = {**spec.entry(address), "users": [user]}
        with guard:
            report.allocated[machine] = address
        return True

    def _claim(self, spec: NetworkSpec, owner: str, candidates: _Candidates) -> str | None:
        while True:
            address = candidates.take()
            if address is None:
                return None
            if self._create(spec, owner, address):
                return address

    def _create(self, spec: NetworkSpec, owner: str, address: str) -> bool:
        """One atomic create; True when ``owner`` holds ``address`` afterwards (an earlier create adopted)."""
        ident = item_id(spec.name, address)
        item = {"id": ident, "network": spec.name, "address": address, "machine": owner, "at": now_iso()}
        try:
            self.chef.data_bags.create_item(ADDRESSES_BAG, item)
            return True
        except NotFound:
            self.chef.data_bags.ensure(ADDRESSES_BAG)
            return self._create(spec, owner, address)
        except Conflict:
            found = self.chef.data_bags.find_item(ADDRESSES_BAG, ident)
            if found is not None and found.get("machine") == owner:
                log.info("%s already holds %s on %s (an earlier allocation); kept", owner, address, spec.name)
                return True
            return False

    # -- release ---------------------------------------------------------------------------

    def release(self, machines: Iterable[str], *, networks: Iterable[str] | None = None,
                user: str | None = None) -> dict[str, list[str]]:
        """Free machines' addresses (of ``networks``, default all) no user needs any more.

        With ``user``, only that user is removed and an address still used by
        another stays; without, the addresses are freed. Returns machine ->
        the networks freed.
        """
        wanted = set(networks) if networks is not None else None
        freed: dict[str, list[str]] = {}
        guard = threading.Lock()

        def change(machine: str) -> Callable[[dict[str, Any]], bool]:
            def mutate(role: dict[str, Any]) -> bool:
                table = crowbar_data(role).setdefault("network", {})
                changed = False
                for network in sorted(table):
                    entry = table[network]
                    if wanted is not None and network not in wanted or not isinstance(entry, dict):
                        continue
                    users = [u for u in entry.get("users") or [] if u != user] if user is not None else []
                    if users:
                        if users != entry.get("users"):
                            entry["users"] = users
                            changed = True
                        continue
                    del table[network]
                    changed = True
                    with guard:
                        freed.setdefault(machine, []).append(network)
                        gone.append((network, machine, str(entry.get("address", ""))))
                return changed
            return mutate

        gone: list[tuple[str, str, str]] = []
        names = sorted(set(machines))
        report = self.roles.update({n: change(n) for n in names}, purpose="free addresses")
        # The roles no longer name them: now the items go (see the module doc).
        run_parallel(lambda g: self._delete(*g), [g for g in gone if g[1] in report.written],
                     workers=self.concurrency, name="addresses")
        if report.failed:
            name, error = next(iter(report.failed.items()))
            raise CrowbarError(f"could not free the addresses of {name}: {error}")
        return {m: n for m, n in freed.items() if m in report.written}

    def _delete(self, network: str, owner: str, address: str) -> None:
        ident = item_id(network, address)
        item = self.chef.data_bags.find_item(ADDRESSES_BAG, ident)
        if item is not None and item.get("machine") == owner:
            try:
                self.chef.data_bags.delete_item(ADDRESSES_BAG, ident)
            except NotFound:
                pass

    def free(self, machine: str, network: str) -> bool:
        """Free ``machine``'s address on ``network`` whoever uses it; False if it had none."""
        check_node_name(machine)
        if self.roles.find(machine) is None:
            raise NotFoundError(f"no machine {machine!r}; see `crowbar machines list`")
        freed = network in self.release([machine], networks=[network]).get(machine, [])
        if not freed:
            self.network(network)  # a network nobody committed: say so rather than "nothing to do"
        return freed

    # -- reading ---------------------------------------------------------------------------

    def of_machine(self, machine: str) -> dict[str, dict[str, Any]]:
        """``crowbar.network`` of one machine's role (network -> entry), read without search."""
        check_node_name(machine)
        role = self.roles.find(machine)
        if role is None:
            raise NotFoundError(f"no machine {machine!r}; see `crowbar machines list`")
        table = (role.get("default_attributes") or {}).get("crowbar", {}).get("network") or {}
        return {k: dict(v) for k, v in sorted(table.items()) if isinstance(v, dict)}

    def items(self, network: str | None = None) -> list[dict[str, Any]]:
        """Every allocation item (of ``network``), by network and address."""
        return self.read_items(self.chef, network, workers=self.concurrency)

    @staticmethod
    def read_items(chef: ChefClient, network: str | None = None, *, workers: int = 8) -> list[dict[str, Any]]:
        """Every allocation item (of ``network``), by network and address."""
        try:
            ids = chef.data_bags.items(ADDRESSES_BAG)
        except NotFound:
            return []
        if network is not None:
            ids = [i for i in ids if i.startswith(f"{network}-")]
        found = run_parallel(lambda i: chef.data_bags.find_item(ADDRESSES_BAG, i), ids,
                             workers=workers, name="addresses")
        rows = [{k: item.get(k) for k in ("network", "address", "machine", "at")} for item in found if item]
        if network is not None:
            rows = [r for r in rows if r["network"] == network]
        return sorted(rows, key=lambda r: (str(r["network"]), _sort_key(str(r["address"]))))

    def allocations(self, *, network: str | None = None, machine: str | None = None) -> list[dict[str, Any]]:
        """Allocations as rows (network, address, machine, users ...): of one machine from its role, else all."""
        if machine is not None:
            return [{"network": net, "machine": machine, **entry} for net, entry in self.of_machine(machine).items()
                    if network is None or net == network]
        return self.items(network)

    # -- virtual addresses -----------------------------------------------------------------

    def vip(self, network: str, name: str, *, range_name: str | None = None) -> str:
        """The virtual address called ``name`` on ``network`` (a service's, not a machine's), allocated on first use.

        Found by name through its index item ``<network>--<name>`` of
        ``crowbar_vips`` (no search); the address item names ``vip:<name>``.
        Two callers racing for one name end with one address: the loser frees its claim.
        """
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValidationError(f"virtual address name {name!r}: use letters, digits, '-' and '_'")
        spec = self.network(network)
        index_id = f"{network}--{name}"
        found = self.chef.data_bags.find_item(VIPS_BAG, index_id)  # None too while the bag does not exist
        if found is not None:
            return str(found["address"])
        owner = f"{VIP_PREFIX}{name}"
        candidates = _Candidates(self.chef, spec, range_name or spec.machine_range(), owner)
        address = self._claim(spec, owner, candidates)
        if address is None:
            raise CrowbarError(f"no virtual address {name!r}: {candidates.full_reason()}")
        self.chef.data_bags.ensure(VIPS_BAG)
        try:
            self.chef.data_bags.create_item(VIPS_BAG, {"id": index_id, "network": network, "name": name,
                                                       "address": address})
        except Conflict:  # another caller named it first: theirs stands, ours goes
            self._delete(network, owner, address)
            return str(self.chef.data_bags.get_item(VIPS_BAG, index_id)["address"])
        return address

    # -- renumbering -----------------------------------------------------------------------

    def renumber_plan(self, network: str, spec: NetworkSpec | None = None) -> list[dict[str, Any]]:
        """Every machine whose ``network`` address leaves its range under ``spec`` (default: as committed): old -> new.

        A dry run: nothing is written. New addresses are the free ones of the
        new range, in order, machine by machine: those :meth:`renumber` gives,
        unless another allocation takes one first.
        """
        spec = spec or self.network(network)
        return self._plan(spec, *self._moving(spec))

    def _plan(self, spec: NetworkSpec, moving: list[tuple[str, str]], inside: dict[str, str]) -> list[dict[str, Any]]:
        free = self._free_in(spec)
        return [{"machine": m, "network": spec.name, "old": old, "new": inside.get(m) or next(free, None)}
                for m, old in moving]

    def renumber(self, network: str, *, wave: int = 50,
                 progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """Move every machine whose address left its (committed) range to a new one, ``wave`` machines at a time.

        Per machine: the new address is claimed (atomic create), the role
        switches to it in one write, then the old item is deleted: an address
        is never held twice, and a machine always has one. Rerunning finishes
        an interrupted renumbering. Returns what moved (old -> new).
        """
        spec = self.network(network)
        moving, inside = self._moving(spec)
        planned = {row["machine"]: row["new"] for row in self._plan(spec, moving, inside)}
        range_name = spec.machine_range()
        done: list[dict[str, Any]] = []
        for start in range(0, len(moving), wave):
            part = dict(moving[start:start + wave])
            candidates = _Candidates(self.chef, spec, range_name, min(part))
            switched: dict[str, str] = {}
            guard = threading.Lock()

            def change(machine: str) -> Callable[[dict[str, Any]], bool]:
                def mutate(role: dict[str, Any]) -> bool:
                    table = crowbar_data(role).setdefault("network", {})
                    entry = table.get(network)
                    if not isinstance(entry, dict) or entry.get("address") != part[machine]:
                        return False  # moved already (an earlier run) or freed: only the old item goes
                    address = inside.get(machine)
                    if address is None:  # the dry run's, if still free
                        wanted = planned[machine]
                        address = (wanted if wanted is not None and self._create(spec, machine, wanted)
                                   else self._claim(spec, machine, candidates))
                    if address is None:
                        raise CrowbarError(f"{machine} keeps {part[machine]}: {candidates.full_reason()}")
                    table[network] = {**spec.entry(address), "users": list(entry.get("users") or [])}
                    with guard:
                        switched[machine] = address
                    return True
                return mutate

            report = self.roles.update({m: change(m) for m in part}, purpose=f"renumber {network}",
                                       progress=progress)
            for machine, old in sorted(part.items()):
                if machine not in report.failed:
                    self._delete(network, machine, old)
                if machine in switched:
                    done.append({"machine": machine, "network": network, "old": old, "new": switched[machine]})
            if report.failed:
                name, error = next(iter(report.failed.items()))
                raise CrowbarError(f"renumbering {network} stopped at {name}: {error}; run it again to finish")
        return done

    def _moving(self, spec: NetworkSpec) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """(machine, address) outside the range, and machine -> an address inside it it already holds.

        A machine holding both was interrupted between claiming the new one and switching its role.
        """
        start, end = spec.ranges[spec.machine_range()]
        moving, inside = [], {}
        for row in self.items(spec.name):
            machine, address = str(row["machine"] or ""), str(row["address"])
            if not machine or machine.startswith(VIP_PREFIX):
                continue
            if int(start) <= int(ipaddress.ip_address(address)) <= int(end):
                inside[machine] = address
            else:
                moving.append((machine, address))
        return sorted(moving), inside

    def _free_in(self, spec: NetworkSpec) -> Iterator[str]:
        """The free addresses of ``spec``'s machine range, in order, lazily."""
        taken = _taken_ids(self.chef)
        return (a for a in spec.addresses(spec.machine_range()) if item_id(spec.name, a) not in taken)

    # -- consistency -----------------------------------------------------------------------

    def check(self, *, repair: bool = False) -> dict[str, list[dict[str, Any]]]:
        """Items and roles that disagree: ``orphans`` (an item its machine's role does not name),
        ``duplicates`` (one address in two roles), ``missing`` (a role naming an address no item holds).

        ``repair`` frees the orphans, each after checking again under its machine's shard lock
        (where allocations run: an allocation half way is not an orphan).
        """
        found = self._check()
        if repair and found["orphans"]:
            self._free_orphans(found["orphans"])
            found = self._check()
        return found

    def _free_orphans(self, orphans: list[dict[str, Any]]) -> None:
        by_machine: dict[str, list[dict[str, Any]]] = {}
        for row in orphans:
            by_machine.setdefault(str(row["machine"]), []).append(row)

        def change(machine: str) -> Callable[[dict[str, Any]], bool]:
            def mutate(role: dict[str, Any]) -> bool:
                table = crowbar_data(role).get("network") or {}
                for row in by_machine[machine]:
                    if (table.get(str(row["network"])) or {}).get("address") != row["address"]:
                        self._delete(str(row["network"]), machine, str(row["address"]))
                return False
            return mutate

        report = self.roles.update({m: change(m) for m in by_machine}, purpose="free orphaned addresses")
        for machine in report.missing:  # the machine is gone: so is any claim on its addresses
            for row in by_machine[machine]:
                self._delete(str(row["network"]), machine, str(row["address"]))

    def _check(self) -> dict[str, list[dict[str, Any]]]:
        items = [r for r in self.items() if not str(r["machine"] or "").startswith(VIP_PREFIX)]
        owners = sorted({str(r["machine"]) for r in items})
        tables = dict(zip(owners, run_parallel(self._table_or_empty, owners, workers=self.concurrency,
                                               name="roles")))
        orphans = [r for r in items if (tables.get(str(r["machine"])) or {}).get(str(r["network"]), {})
                   .get("address") != r["address"]]
        held = {(str(r["network"]), str(r["address"])): str(r["machine"]) for r in items}
        seen: dict[tuple[str, str], str] = {}
        duplicates, missing = [], []
        for machine, table in tables.items():
            for network, entry in table.items():
                key = (network, str(entry.get("address")))
                if key in seen:
                    duplicates.append({"network": network, "address": key[1], "machines": [seen[key], machine]})
                seen[key] = machine
                if held.get(key) != machine:
                    missing.append({"network": network, "address": key[1], "machine": machine})
        return {"orphans": orphans, "duplicates": duplicates, "missing": missing}

    def _table_or_empty(self, machine: str) -> dict[str, dict[str, Any]]:
        try:
            return self.of_machine(machine)
        except NotFoundError:
            return {}


def _start_key(user: str, machines: Iterable[str]) -> str:
    """Where in a range an allocation for ``user`` of ``machines`` starts looking (hashed):
    the user and the first machine by name."""
    return f"{user} {min(machines, default='')}"


def _taken_ids(chef: ChefClient) -> set[str]:
    """The ids of every address item (the addresses taken, on any network)."""
    try:
        return set(chef.data_bags.items(ADDRESSES_BAG))
    except NotFound:
        return set()


def _sort_key(address: str) -> tuple[int, int]:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return (9, 0)
    return (parsed.version, int(parsed))


def needed_networks(proposal: Any) -> dict[str, set[str]]:
    """network -> the machines of ``proposal`` that need it (the barclamp's ``networks``)."""
    declared: Mapping[str, Iterable[str]] = getattr(proposal.definition, "networks", {}) or {}
    wanted: dict[str, set[str]] = {}
    for element, networks in declared.items():
        for network in networks:
            wanted.setdefault(network, set()).update(proposal.elements.get(element, []))
    return wanted


class AddressClaims:
    """New addresses claimed for machines before their roles are written, then folded into those writes.

    A commit reads and writes each machine's role once anyway (run list,
    node attributes), and an allocation reads every role before it writes
    any: :meth:`claim_ahead` claims the addresses the roles lack, many
    atomic creates at once, and :meth:`apply` adds each machine's to its
    role before the role is written, so allocating costs one create per new
    address and no role read or write of its own. Everything runs under the
    shard locks of the machines. Addresses are picked in machine-name order
    from a place of the range that depends only on ``user`` and the machines
    (:func:`_start_key`), so a commit and an allocation for one user and the
    same machines pick the same ones (a crashed run's claims, adopted, agree
    with what a rerun would pick), while allocations of other machines, a
    discovery's of each machine, start apart.
    """

    def __init__(self, book: AddressBook, user: str, wanted: Mapping[str, Iterable[str]], *,
                 specs: Mapping[str, NetworkSpec] | None = None, ranges: Mapping[str, str] | None = None,
                 recovering: Callable[[], bool] | None = None) -> None:
        """``wanted``: network -> the machines that need it (networks not committed are left out);
        ``specs``: the networks, when the caller has them (default: the committed ones);
        ``ranges``: network -> the range to take from (default: its machine range);
        ``recovering``: whether a crashed holder's lock was taken over (claims it left are adopted)."""
        self.book = book
        self.user = user
        defined = specs if specs is not None else (book.networks() if wanted else {})
        #: network -> the machines that need it.
        self.wanted = {n: set(m) for n, m in wanted.items() if n in defined}
        self.specs = {n: defined[n] for n in self.wanted}
        self.reports = {n: AllocationReport(n) for n in self.wanted}
        self._candidates = {n: _Candidates(book.chef, spec, (ranges or {}).get(n) or spec.machine_range(),
                                           _start_key(user, self.wanted[n]))
                            for n, spec in self.specs.items()}
        for candidates in self._candidates.values():
            candidates.recovering = recovering or candidates.recovering
        self._guard = threading.Lock()
        #: Machines whose roles :meth:`apply` saw (their addresses need nothing after the commit).
        self.handled: set[str] = set()
        #: (network, machine) -> an address claimed by :meth:`claim_ahead`, not yet in a role.
        self._ahead: dict[tuple[str, str], str] = {}

    def __bool__(self) -> bool:
        return bool(self.wanted)

    def claim_ahead(self, records: Mapping[str, MachineRecord | None]) -> None:
        """Claim, many at once, the addresses of machines whose ``records`` (their roles as read,
        or a snapshot of them; None: not a machine) name none yet.

        Done before their roles are read, the creates do not wait on the
        reads: a commit's step per machine stays a role read and write. A
        role that names an address after all (the snapshot was behind) gets
        its claim freed by :meth:`apply`; claims no role took are freed by
        :meth:`discard_unused`, and a crash's are adopted by the next run.
        """
        jobs = [(network, node) for network, machines in sorted(self.wanted.items())
                for node in sorted(machines & set(records))
                if records[node] is not None and not records[node].addresses.get(network)
                and (network, node) not in self._ahead and node not in self.handled]
        # Picked in name order, then created at once: the machines get the same addresses
        # whatever order the threads run in (a create meeting a taken address tries the next).
        picks = []
        for network, node in jobs:
            candidates = self._candidates[network]
            adopted = candidates.orphan_of(node)  # after a crash: what it claimed for the machine
            picks.append((network, node, adopted is not None, adopted or candidates.take()))

        def claim(pick: tuple[str, str, bool, str | None]) -> None:
            network, node, adopted, address = pick
            if address is None:
                return  # the range is full: assign() names the machine as refused
            if not adopted and not self.book._create(self.specs[network], node, address):
                address = self.book._claim(self.specs[network], node, self._candidates[network])
            if address is not None:
                with self._guard:
                    self._ahead[(network, node)] = address

        run_parallel(claim, picks, workers=self.book.concurrency, name="addresses")

    def apply(self, node: str, role: dict[str, Any]) -> bool:
        """Add ``node``'s addresses to its ``role`` before the commit writes it; True if that changed it."""
        changed = False
        for network, machines in sorted(self.wanted.items()):
            if node in machines:
                with self._guard:
                    claimed = self._ahead.pop((network, node), None)
                changed |= self.book.assign(self.specs[network], node, role, self.user, self._candidates[network],
                                            self.reports[network], self._guard, claimed=claimed)
        with self._guard:
            self.handled.add(node)
        return changed

    def discard_unused(self) -> None:
        """Free the addresses :meth:`claim_ahead` claimed that no role took (the commit ended before)."""
        with self._guard:
            left, self._ahead = sorted(self._ahead.items()), {}
        try:
            run_parallel(lambda item: self.book._delete(item[0][0], item[0][1], item[1]), left,
                         workers=self.book.concurrency, name="addresses")
        except CrowbarError as exc:  # never hides why the commit ended; `crowbar network repair` frees them
            log.warning("could not free %d address(es) claimed for the commit: %s", len(left), exc)

    def undo(self, nodes: Iterable[str]) -> None:
        """The roles of ``nodes`` were put back as read: the addresses claimed for them go, and they are
        no longer handled."""
        nodes = set(nodes)
        gone = []
        with self._guard:
            self.handled -= nodes
            for network, report in self.reports.items():
                for machine in sorted(nodes & set(report.allocated)):
                    gone.append((network, machine, report.allocated.pop(machine)))
                for machine in nodes:
                    report.kept.pop(machine, None)
                    report.refused.pop(machine, None)
        run_parallel(lambda g: self.book._delete(*g), gone, workers=self.book.concurrency, name="addresses")


class CommitAddresses(AddressClaims):
    """The addresses a commit's machines need (its barclamp's ``networks``), claimed for its role writes."""

    def __init__(self, book: AddressBook, proposal: Any, *, recovering: Callable[[], bool] | None = None) -> None:
        super().__init__(book, str(proposal.ref.key), needed_networks(proposal), recovering=recovering)


def _refusals(report: AllocationReport) -> list[str]:
    """Why machines got no address on ``report``'s network, one line each."""
    return [f"{m}: no {report.network} address: {why}" for m, why in sorted(report.refused.items())]


def allocate_for_commit(book: AddressBook, proposal: Any, considered: Iterable[str],
                        folded: CommitAddresses | None = None) -> list[str]:
    """After a commit: the networks the proposal's machines need, and none of the others.

    ``considered``: the machines the commit looked at (the proposal's and
    those it had before); one that no longer needs a network loses the
    proposal as a user there. ``folded``: what the commit's own role writes
    allocated (those machines need nothing more). Returns why machines got no address.
    """
    wanted = needed_networks(proposal)
    defined = book.networks() if wanted else {}
    if not defined:  # the network proposal is not committed: addresses are not managed
        return []
    user = proposal.ref.key
    problems = []
    for network, machines in sorted(wanted.items()):
        if network not in defined:
            problems.append(f"no network {network!r} in the committed {NETWORK_BARCLAMP} proposal "
                            f"(networks: {', '.join(sorted(defined))})")
            continue
        done = folded.handled if folded is not None and network in folded.wanted else set()
        if done:
            problems += _refusals(folded.reports[network])  # type: ignore[union-attr]
        problems += _refusals(book.allocate(network, machines - done, user=user))
        gone = sorted(set(considered) - machines)
        if gone:
            book.release(gone, networks=[network], user=user)
    return problems


def release_for_deactivate(book: AddressBook, proposal: Any, machines: Iterable[str]) -> None:
    """After a deactivate: the proposal no longer needs any address; ones nobody else uses are freed."""
    wanted = needed_networks(proposal)
    if wanted:
        book.release(machines, networks=sorted(wanted), user=proposal.ref.key)
