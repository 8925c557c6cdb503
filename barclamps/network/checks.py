"""Checks of a network layout (pure: no server), with Python's :mod:`ipaddress`.

* each network: subnet and netmask one network (no host bits set), the
  broadcast address the subnet's, the VLAN a valid id, the router inside the
  subnet and neither its network nor its broadcast address;
* each range: start <= end, inside the subnet, neither the network nor the
  broadcast address, no two ranges of a network overlapping;
* two networks whose subnets overlap must say they share a segment
  (``share_segment_with`` on either); even then no range of one overlaps a
  range of the other (an address is allocated on one network only), and no
  router of the segment lies inside a range;
* every conduit a network names exists in the conduit map (``bmc`` is the
  BMC's own port).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from itertools import combinations
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The conduit of a BMC's dedicated port: not in the conduit map.
BMC_CONDUIT = "bmc"


def _parse(name: str, net: Mapping[str, Any]) -> tuple[Network | None, dict[str, tuple[Address, Address]], list[str]]:
    problems: list[str] = []
    try:
        subnet: Network | None = ipaddress.ip_network(f"{net.get('subnet')}/{net.get('netmask')}", strict=True)
    except ValueError as exc:
        return None, {}, [f"network {name}: subnet {net.get('subnet')} with netmask {net.get('netmask')} "
                          f"is not a network ({exc})"]
    ranges: dict[str, tuple[Address, Address]] = {}
    for rname, value in (net.get("ranges") or {}).items():
        try:
            start, end = ipaddress.ip_address(value.get("start")), ipaddress.ip_address(value.get("end"))
        except (ValueError, AttributeError) as exc:
            problems.append(f"network {name}: range {rname} is not two addresses ({exc})")
            continue
        if start.version != subnet.version or end.version != subnet.version:
            problems.append(f"network {name}: range {rname} ({start}-{end}) is not IPv{subnet.version} "
                            f"like its subnet {subnet}")
            continue
        ranges[rname] = (start, end)
    return subnet, ranges, problems


def check_networks(networks: Mapping[str, Mapping[str, Any]], conduits: set[str]) -> list[str]:
    """Every problem of a layout, one message each (empty: it is sane)."""
    problems: list[str] = []
    parsed: dict[str, tuple[Network, dict[str, tuple[Address, Address]]]] = {}
    for name, net in sorted(networks.items()):
        subnet, ranges, found = _parse(name, net)
        problems += found
        if subnet is None:
            continue
        parsed[name] = (subnet, ranges)
        problems += list(_check_one(name, net, subnet, ranges, conduits))
    for (a, (sub_a, ranges_a)), (b, (sub_b, ranges_b)) in combinations(sorted(parsed.items()), 2):
        if sub_a.version != sub_b.version or not sub_a.overlaps(sub_b):
            continue
        shared = b in (networks[a].get("share_segment_with") or []) or a in (networks[b].get("share_segment_with") or [])
        if not shared:
            problems.append(f"networks {a} ({sub_a}) and {b} ({sub_b}) overlap; if they share a segment, "
                            f"say so with `networks.{b}.share_segment_with` = [\"{a}\"]")
            continue
        for (ra, (sa, ea)), (rb, (sb, eb)) in ((x, y) for x in ranges_a.items() for y in ranges_b.items()):
            if sa <= eb and sb <= ea:
                problems.append(f"range {ra} of {a} ({sa}-{ea}) overlaps range {rb} of {b} ({sb}-{eb}): "
                                "one address would belong to two networks")
        for owner, other_ranges in ((a, ranges_b), (b, ranges_a)):
            router = networks[owner].get("router")
            if not router:
                continue
            try:
                address = ipaddress.ip_address(router)
            except ValueError:
                continue  # said by _check_one
            for rname, (start, end) in other_ranges.items():
                if start.version == address.version and start <= address <= end:
                    other = b if owner == a else a
                    problems.append(f"router {router} of {owner} is inside range {rname} of {other} ({start}-{end})")
    return problems


def _check_one(name: str, net: Mapping[str, Any], subnet: Network,
               ranges: dict[str, tuple[Address, Address]], conduits: set[str]) -> Iterator[str]:
    broadcast = net.get("broadcast")
    if subnet.version == 4 and broadcast and str(broadcast) != str(subnet.broadcast_address):
        yield f"network {name}: broadcast {broadcast} is not the broadcast address of {subnet} ({subnet.broadcast_address})"
    vlan = int(net.get("vlan") or 0)
    if net.get("use_vlan") and not 1 <= vlan <= 4094:
        yield f"network {name}: use_vlan needs a vlan from 1 to 4094, has {vlan}"
    conduit = str(net.get("conduit") or "")
    if conduit != BMC_CONDUIT and conduit not in conduits:
        yield f"network {name}: conduit {conduit!r} is not in the conduit map (conduits: {', '.join(sorted(conduits))})"
    edges = {subnet.network_address, subnet.broadcast_address} if subnet.version == 4 and subnet.prefixlen < 31 else set()
    router = net.get("router")
    if router:
        try:
            address = ipaddress.ip_address(router)
        except ValueError:
            yield f"network {name}: router {router!r} is not an address"
        else:
            if address not in subnet:
                yield f"network {name}: router {router} is outside its subnet {subnet}"
            elif address in edges:
                yield f"network {name}: router {router} is the network or broadcast address of {subnet}"
            for rname, (start, end) in ranges.items():
                if start.version == address.version and start <= address <= end:
                    yield f"network {name}: router {router} is inside its range {rname} ({start}-{end})"
    for rname, (start, end) in sorted(ranges.items()):
        if start.version != subnet.version or start not in subnet or end not in subnet:
            yield f"network {name}: range {rname} ({start}-{end}) is not inside its subnet {subnet}"
            continue
        if start > end:
            yield f"network {name}: range {rname} starts at {start}, after its end {end}"
        if start in edges or end in edges:
            yield f"network {name}: range {rname} ({start}-{end}) includes the network or broadcast address"
    for (ra, (sa, ea)), (rb, (sb, eb)) in combinations(sorted(ranges.items()), 2):
        if sa.version == sb.version and sa <= eb and sb <= ea:
            yield f"network {name}: ranges {ra} ({sa}-{ea}) and {rb} ({sb}-{eb}) overlap"
