"""The BMC trust model: credentials go only to a confirmed, pinned BMC, never where a node says.

Real peers throughout: ipmi_sim and sushy-tools for the BMCs, plain sockets
on 127.0.0.1 as the foreign address a compromised node points at.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from barclamp_sdk.model.bmctrust import BMC_KEY
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.errors import BMCError, Forbidden, ValidationError
from barclamp_sdk.model.naming import node_role_name
from barclamp_sdk.testing.bmcpeers import FACTORY_BIOS, BmcLab, fresh_port
from barclamp_sdk.testing.tripwire import TlsImpostor, Tripwire
from barclamps.bios.apply import apply


@pytest.fixture
def lab(tmp_path):
    with BmcLab(tmp_path / "bmcs", ["good.example.com", "rogue.example.com"]) as running:
        yield running


@pytest.fixture
def tripwire():
    with Tripwire() as listening:
        yield listening


def foreign(tripwire):
    """What a compromised node writes under crowbar_wall.bmc: the attacker's listener."""
    return {"bmc": {"address": "127.0.0.1", "ipmi_port": tripwire.port, "redfish_port": tripwire.port}}


def _bios(crowbar, *, commit=True):
    crowbar.proposals.create("bios", "default", settings={"bmc_username": "admin", "bmc_password": "password"})
    if commit:
        assert crowbar.proposals.commit("bios", "default").status == "applied"
    return crowbar.barclamps.get("bios")


def _apply(crowbar, names):
    return {r.machine: r for r in apply(crowbar.context("bios"), crowbar.proposals.get("bios", "default"), names)}


def test_a_node_that_reports_a_foreign_bmc_gets_nothing_sent_there(crowbar, fleet, lab, tripwire, crowbar_cli):
    good, rogue = lab.names
    fleet.add(1, "compute", names=[good], wall=lambda n, i: lab.wall(n))
    fleet.add(1, "compute", names=[rogue], wall=foreign(tripwire))  # never confirmed
    crowbar.machines.discover()
    crowbar.machines.bmc.confirm(good, by="test operator")
    _bios(crowbar)
    # The confirmed machine's node now rewrites its report too, pointing at the listener.
    fleet.converge(good, wall=foreign(tripwire))

    results = _apply(crowbar, [good, rogue])
    assert results[rogue].status == "skipped"
    assert results[rogue].reason.startswith(f"no confirmed BMC address; the node reports 127.0.0.1 (IPMI {tripwire.port}")
    assert f"crowbar machines bmc confirm {rogue}" in results[rogue].reason
    assert results[good].status == "applied"  # through the confirmed real peers
    assert lab.bios(good)["BootMode"] == "Uefi" and lab.ipmi[good].boot_device == "pxe"
    [warning] = results[good].warnings
    assert f"{good} reports its BMC at 127.0.0.1 (IPMI {tripwire.port}" in warning and "the report is ignored" in warning

    code, out, err = crowbar_cli("bios", "apply", good, rogue)
    assert code == 1
    assert rogue in out and "skipped" in out
    assert f"warning: {good} reports its BMC at 127.0.0.1" in err
    assert f"error: 1 of 2 machine(s) skipped, nothing sent to their BMCs: {rogue}: no confirmed BMC address" in err
    shown = crowbar_cli.json("bios", "apply", good)  # the confirmed one alone succeeds
    assert shown[0]["status"] == "unchanged" and shown[0]["warnings"] == [warning]

    # The lifecycle hook: the unconfirmed machine boots on, skipped, not put in problem.
    crowbar.machines.allocate([good, rogue])
    states = fleet.boot([good, rogue])
    assert states == {good: "ready", rogue: "ready"}
    assert "bios" not in crowbar.machines.record(rogue).hardware

    code, out, _ = crowbar_cli("machines", "show", rogue)
    assert code == 0 and "not confirmed: nothing is sent to any BMC of this machine" in out
    assert f"127.0.0.1 (IPMI {tripwire.port}, Redfish {tripwire.port}) by the node" in out
    shown = crowbar_cli.json("machines", "bmc", "show", good)
    assert shown["confirmed"]["address"] == "127.0.0.1" and shown["confirmed"]["ipmi_port"] == lab.ipmi[good].port
    assert shown["confirmed"]["confirmed_by"] == "test operator" and shown["warnings"] == [warning]

    assert tripwire.received() == (0, b"")  # no connection, no datagram, no byte: no credentials


def test_confirming_pins_the_certificate_and_a_changed_one_is_refused(crowbar, fleet, lab, tmp_path, crowbar_cli):
    good, other = lab.names
    fleet.add(2, "compute", names=[good, other], wall=lambda n, i: lab.wall(n))
    crowbar.machines.discover()
    _bios(crowbar)
    assert crowbar_cli("machines", "bmc", "confirm", good)[0] == 0
    pinned = crowbar.machines.bmc.get(good).certificate_sha256
    assert len(pinned) == 64
    assert crowbar.machines.roles.get(good)["default_attributes"]["crowbar"][BMC_KEY]["certificate_sha256"] == pinned
    assert _apply(crowbar, [good])[good].status == "applied"
    assert "bmc_certificate" not in crowbar.machines.record(good).hardware  # no trust on first use

    lab.redfish.stop()  # a new self-signed certificate on restart: another BMC, or an impostor
    lab.redfish.start()
    [result] = _apply(crowbar, [good]).values()
    assert result.status == "problem"
    assert "its certificate changed" in result.reason and "crowbar machines bmc confirm" in result.reason
    code, out, _ = crowbar_cli("bios", "apply", good)
    assert code == 1 and "certificate changed" in out and "nothing was sent" in out
    # A fingerprint known out of band that is not what the BMC presents: nothing recorded.
    with pytest.raises(ValidationError, match="presents certificate sha256 .* not the 0{64} given"):
        crowbar.machines.bmc.confirm(other, certificate_sha256="0" * 64)
    assert crowbar.machines.bmc.get(other) is None
    # The operator checks the new BMC and confirms again: it works.
    crowbar.machines.bmc.confirm(good)
    assert crowbar.machines.bmc.get(good).certificate_sha256 != pinned
    assert _apply(crowbar, [good])[good].status == "applied"  # (the restarted peer came back with factory BIOS)

    # An impostor answering TLS on the confirmed port receives no HTTP request, so no password.
    lab.redfish.stop()
    impostor = TlsImpostor(tmp_path / "impostor", lab.redfish.port)
    try:
        [result] = _apply(crowbar, [good]).values()
    finally:
        impostor.close()
    assert result.status == "problem" and "certificate changed" in result.reason
    assert impostor.handshakes >= 1 and impostor.data == b""


def test_bios_apply_uses_the_committed_revision_only(crowbar, fleet, lab, crowbar_cli):
    good, other = lab.names
    fleet.add(2, "compute", names=[good, other], wall=lambda n, i: lab.wall(n))
    crowbar.machines.discover()
    crowbar.machines.bmc.confirm(good)
    _bios(crowbar, commit=False)
    with pytest.raises(ValidationError, match="bios/default is not committed; `crowbar bios apply` acts on committed"):
        _apply(crowbar, [good])
    code, _, err = crowbar_cli("bios", "apply", good)
    assert code == 1 and "bios/default is not committed" in err
    assert lab.bios(good) == FACTORY_BIOS
    committed = crowbar.proposals.commit("bios", "default")
    assert committed.status == "applied"
    # Edited, not committed: another user, every machine to the Storage set, no network boot.
    crowbar.proposals.set("bios", "default", {"bmc_username": "intruder", "boot_from_network": "false",
                                              "bios_map": json.dumps([{"pattern": ".*", "bios_set": "Storage",
                                                                       "raid_set": "JBODOnly"}])})
    crowbar.proposals.set("bios", "default", {"elements.bios-settings": good})
    assert crowbar.proposals.get("bios", "default").revision > crowbar.proposals.applied("bios", "default").revision
    [result] = _apply(crowbar, [good]).values()
    assert result.status == "applied" and result.bios_set == "default"  # the committed map, user and boot
    assert lab.ipmi[good].boot_device == "pxe"
    assert crowbar.machines.record(good).hardware["bios_set"] == "default"
    # Dropped from the editable revision, still in the committed one: skipped for its own reason.
    code, out, _ = crowbar_cli("bios", "apply", other)
    assert code == 1 and "no confirmed BMC address" in out
    # The lifecycle hook too: the machine boots through hardware-installing with the committed settings.
    crowbar.machines.allocate([good])
    assert fleet.boot([good]) == {good: "ready"}
    assert crowbar.machines.record(good).hardware["bios"]["status"] == "unchanged"


def test_confirm_refuses_what_it_cannot_check(crowbar, fleet, lab, crowbar_cli):
    good, _ = lab.names
    [bare] = fleet.add(1, "compute", wall={})
    fleet.add(1, "compute", names=[good], wall=lambda n, i: lab.wall(n))
    crowbar.machines.discover()
    code, _, err = crowbar_cli("machines", "bmc", "confirm", bare)
    assert code == 1 and f"{bare} reports no BMC; give its address" in err
    code, _, err = crowbar_cli("machines", "bmc", "confirm", bare, "--address", "not an address")
    assert code == 1 and "is neither an IP address nor a host name" in err
    closed = fresh_port()  # nothing listens: no certificate to pin
    with pytest.raises(BMCError, match="no TLS answer on port .*give the certificate's SHA-256"):
        crowbar.machines.bmc.confirm(bare, "127.0.0.1", redfish_port=closed)
    assert crowbar.machines.bmc.get(bare) is None
    # Known out of band while the BMC is down: pinned as given (and checked on every connection).
    confirmed = crowbar.machines.bmc.confirm(bare, "127.0.0.1", redfish_port=closed, certificate_sha256="AB:" * 31 + "AB")
    assert confirmed.certificate_sha256 == "ab" * 32 and confirmed.source == "operator"
    code, out, _ = crowbar_cli("machines", "bmc", "confirm", good, "--address", "127.0.0.1",
                               "--ipmi-port", str(lab.ipmi[good].port), "--redfish-port", str(lab.redfish.port),
                               "--redfish-system", lab.redfish.system_path(good), "--interface", "bmc")
    assert code == 0 and f"{good}: BMC 127.0.0.1 (IPMI {lab.ipmi[good].port}, Redfish {lab.redfish.port}) confirmed" in out
    assert crowbar_cli.json("machines", "bmc", "show", good)["warnings"] == []  # the report agrees
    assert crowbar_cli.json("machines", "bmc", "forget", good)["forgotten"] is True
    assert crowbar.machines.bmc.get(good) is None
    with pytest.raises(Exception, match="no machine 'nope.example.com'"):
        crowbar.machines.bmc.confirm("nope.example.com", "127.0.0.1")
    code, _, err = crowbar_cli("machines", "bmc", "show", "nope.example.com")
    assert code == 1 and err.strip() == "error: no machine 'nope.example.com'; see `crowbar machines list`"
    # A trusted source (say, the network barclamp allocating BMC addresses) confirms through the same call.
    by_network = crowbar.machines.bmc.confirm(good, "127.0.0.1", ipmi_port=lab.ipmi[good].port,
                                              redfish_port=lab.redfish.port, redfish_system=lab.redfish.system_path(good),
                                              interface="bmc", source="network", by="network barclamp")
    assert crowbar_cli.json("machines", "bmc", "show", good)["confirmed"] == by_network.model_dump()
    assert by_network.source == "network" and len(by_network.certificate_sha256) == 64


def test_a_node_with_its_own_client_key_can_write_its_report_but_not_its_confirmed_bmc(crowbar, fleet, lab, tripwire):
    """What the trust model rests on: roles and data bags are not writable with a node's client key."""
    good, _ = lab.names
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    fleet.add(1, "compute", names=[good], clients=False, wall=lambda n, i: lab.wall(n))
    crowbar.chef.clients.create({"name": good, "admin": False, "public_key": public})
    crowbar.machines.discover()
    crowbar.machines.bmc.confirm(good)
    _bios(crowbar)
    with ChefClient(dataclasses.replace(crowbar.chef.config, client_name=good, client_key_pem=private,
                                        client_key_path=None)) as node_client:
        node = node_client.nodes.get(good)  # the node rewrites its own report: allowed, and harmless
        node["normal"]["crowbar_wall"].update(foreign(tripwire))
        node_client.nodes.update(good, node)
        role = node_client.roles.get(node_role_name(good))  # it may read its role ...
        role["default_attributes"]["crowbar"][BMC_KEY]["address"] = "127.0.0.2"
        with pytest.raises(Forbidden):  # ... not change its confirmed BMC
            node_client.roles.update(node_role_name(good), role)
        item = node_client.data_bags.get_item("crowbar", "bc-bios-default")
        with pytest.raises(Forbidden):  # nor a proposal
            node_client.data_bags.update_item("crowbar", item)
    assert crowbar.machines.bmc.get(good).address == "127.0.0.1"
    assert crowbar.machines.bmc.reported(good).ipmi_port == tripwire.port
    assert _apply(crowbar, [good])[good].status == "applied"
    assert tripwire.received() == (0, b"")
