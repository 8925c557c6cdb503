"""Operators: revert, protected dependencies, optional links, the audit trail (against the real server)."""

from __future__ import annotations

import getpass
import json

import pytest

from barclamp_sdk import Action, ActionResult, Attributes, Barclamp, Element, Link, Secret
from barclamp_sdk.errors import NotFoundError, ValidationError
from barclamp_sdk.model.audit import AuditTrail, parse_since
from barclamp_sdk.testing.snapshot import role_snapshot, server_snapshot
from tests.support.terminal import in_terminal
from tests.support.widgets import TEST_BARCLAMPS


class HubAttributes(Attributes):
    size: int = 1
    token: Secret = None


def ping(crowbar, proposal_name, machines, progress):
    return ActionResult([{"machine": m, "answer": "pong"} for m in machines], ("machine", "answer"))


class Hub(Barclamp):
    name = "hub"
    order = 80
    Attributes = HubAttributes
    elements = (Element("hub-server", recipes=("hub::server",)),)
    actions = (Action("ping", "Ping machines.", ping),)

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("hub-server", *[m.name for m in inventory.candidates()[:1]])


class SpokeAttributes(Attributes):
    hub_instance: str = ""
    mirror_instance: str = "none"


class Spoke(Barclamp):
    name = "spoke"
    order = 90
    Attributes = SpokeAttributes
    elements = (Element("spoke-node", recipes=("spoke::node",)),)
    links = (Link("hub", "hub_instance"), Link("hub", "mirror_instance", optional=True))

    def create_proposal(self, proposal, inventory, ctx):
        proposal.assign("spoke-node", *[m.name for m in inventory.candidates()])


@pytest.fixture
def barclamps_under_test():
    return [*TEST_BARCLAMPS, Hub, Spoke]


@pytest.fixture
def ready(fleet):
    return fleet.ready(3, "compute") + fleet.ready(1, "storage")


def audit_dump(chef) -> str:
    return json.dumps(server_snapshot(chef)["data_bags"].get("crowbar_audit", {}))


# -- revert -------------------------------------------------------------------------------


def test_revert_then_commit_restores_the_roles_of_that_revision(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    applied_r1 = role_snapshot(chef)
    r1 = crowbar.proposals.revision("widget", "default", 1)
    crowbar.proposals.set("widget", "default", {"port": "9090", "mode": "fast", "tags": '["a"]',
                                                "elements.widget-agent": ",".join(sorted(ready)[:2])})
    crowbar.proposals.commit("widget", "default")
    applied_r2 = role_snapshot(chef)
    assert applied_r2 != applied_r1

    result = crowbar.proposals.revert("widget", "default", 1)
    assert result.changed and result.proposal.revision == 3 and result.previous_revision == 2
    assert result.commit is None and role_snapshot(chef) == applied_r2  # committing is left to the operator
    assert {c.path for c in result.diff.changes} >= {"attributes.widget.port", "attributes.widget.mode"}
    assert "-  \"port\": 9090" in result.diff.text or "9090" in result.diff.text
    r3 = crowbar.proposals.get("widget", "default")
    assert r3.content() == r1.content()  # secrets by reference to r1's version
    assert r3.attributes["password"] == r1.attributes["password"]
    history = crowbar.proposals.history("widget", "default")
    assert history[-1]["change"] == "reverted to r1"

    assert crowbar.proposals.commit("widget", "default").status == "applied"
    assert role_snapshot(chef) == applied_r1
    assert crowbar.secrets.get(r3.attributes["password"]) == "generated-default"


def test_revert_commit_does_both(crowbar, ready, chef):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    applied_r1 = role_snapshot(chef)
    crowbar.proposals.set("widget", "default", {"port": "9091"})
    crowbar.proposals.commit("widget", "default")
    result = crowbar.proposals.revert("widget", "default", 1, commit=True)
    assert result.commit is not None and result.commit.status == "applied"
    assert role_snapshot(chef) == applied_r1


@pytest.mark.parametrize("revision,error,message", [
    (99, NotFoundError, "has no revision 99"),
    (2, ValidationError, "r2 is the current revision"),
    (0, ValidationError, "positive number"),
    ("1", ValidationError, "positive number"),
])
def test_a_bad_revision_is_refused_and_nothing_written(crowbar, ready, chef, revision, error, message):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    before = server_snapshot(chef)
    with pytest.raises(error, match=message):
        crowbar.proposals.revert("widget", "default", revision)
    assert server_snapshot(chef) == before


def test_revert_cli_refuses_bad_revisions_in_one_line(crowbar, ready, chef, crowbar_cli):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    before = server_snapshot(chef)
    for args, code, text in ((("99",), 1, "has no revision 99"), (("2",), 1, "current revision"),
                             (("x",), 1, "REV must be a revision number")):
        status, out, err = crowbar_cli("widget", "proposal", "revert", "default", *args, "--json")
        assert status == code and text in err and out == "", (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert server_snapshot(chef) == before


def test_revert_cli_shows_the_diff_and_json(crowbar, ready, chef, crowbar_cli):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    code, out, err = crowbar_cli("widget", "proposal", "revert", "default", "1")
    assert code == 0, err
    assert "9000" in out and "8080" in out and "saved widget/default r3 with the content of r1" in out
    assert "proposal commit default" in out
    data = crowbar_cli.json("widget", "proposal", "revert", "default", "2", "--commit")
    assert data["revision"] == 4 and data["reverted_to"] == 2 and data["changed"] is True
    assert data["commit"]["status"] == "applied"
    assert [c["path"] for c in data["diff"]["changes"]] == ["attributes.widget.port"]
    assert crowbar.proposals.get("widget", "default").attributes["port"] == 9000


def test_revert_and_an_action_name_their_phases_on_a_terminal(crowbar, ready, crowbar_env):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.set("widget", "default", {"port": "9000"})
    code, out, terminal = in_terminal(["widget", "proposal", "revert", "default", "1", "--commit"], crowbar_env)
    assert code == 0, (out, terminal)
    assert "saved widget/default r3 with the content of r1" in out
    for phase in ("reverting widget/default to r1: reading r1", "saving the content of r1",
                  "reverting widget/default to r1: locking", "writing"):
        assert phase in terminal, (phase, terminal)
    assert crowbar.proposals.status("widget", "default").status == "ready"
    crowbar.proposals.create("hub", "default")
    code, out, terminal = in_terminal(["hub", "ping", *ready[:2]], crowbar_env)
    assert code == 0 and out.count("pong") == 2, (out, terminal)
    assert "hub ping: ping 0/2" in terminal, terminal
    # JSON mode: the result only, no progress.
    code, out, terminal = in_terminal(["hub", "ping", ready[0], "--json"], crowbar_env)
    assert code == 0 and '"answer": "pong"' in out and "ping 0/1" not in terminal


def test_revert_to_a_secret_replaced_and_committed_since_says_it_is_gone(crowbar, ready, chef, crowbar_cli):
    crowbar.proposals.create("widget", "default")
    crowbar.proposals.commit("widget", "default")
    crowbar.proposals.set("widget", "default", {"password": "second-value", "port": "9000"})
    # Not committed yet: r1's version is still used by the config role, so r1 can come back.
    assert crowbar.proposals.revert("widget", "default", 1).proposal.revision == 3
    crowbar.proposals.revert("widget", "default", 2)
    crowbar.proposals.commit("widget", "default")  # r4 (second-value) applied: r1's version is collected
    before = server_snapshot(chef)
    with pytest.raises(ValidationError, match=r"value\(s\) of password at r1 are gone.*--keep-current-secrets"):
        crowbar.proposals.revert("widget", "default", 1)
    code, out, err = crowbar_cli("widget", "proposal", "revert", "default", "1")
    assert code == 1 and "are gone" in err and out == ""
    assert server_snapshot(chef) == before
    result = crowbar.proposals.revert("widget", "default", 1, keep_current_secrets=True)
    assert result.kept_secrets == ["password"]
    current = crowbar.proposals.get("widget", "default")
    assert current.attributes["port"] == 8080
    assert crowbar.secrets.get(current.attributes["password"]) == "second-value"


# -- protected dependencies, optional links -------------------------------------------------


def test_deactivate_and_delete_of_a_linked_dependency_are_refused_and_force_is_audited(
        crowbar, ready, chef, crowbar_cli):
    crowbar.proposals.create("hub", "default")
    crowbar.proposals.commit("hub", "default")
    spoke = crowbar.proposals.create("spoke", "default")
    assert spoke.attributes["hub_instance"] == "default"
    crowbar.proposals.commit("spoke", "default")

    before = server_snapshot(chef)
    with pytest.raises(ValidationError, match=r"cannot deactivate hub/default: .*spoke/default \(hub_instance\), "
                                              r"spoke/default \(mirror_instance\).*--force"):
        crowbar.proposals.deactivate("hub", "default")
    code, out, err = crowbar_cli("hub", "proposal", "deactivate", "default", "--json")
    assert code == 1 and "spoke/default (hub_instance)" in err and out == ""
    assert json.loads(err.strip().splitlines()[-1])["error"].startswith("cannot deactivate hub/default")
    assert server_snapshot(chef) == before  # refused: nothing written, not even an audit entry

    data = crowbar_cli.json("hub", "proposal", "deactivate", "default", "--force")
    assert data["status"] == "deactivated"
    assert crowbar.proposals.status("hub", "default").status == "hold"

    before = server_snapshot(chef)
    code, out, err = crowbar_cli("hub", "proposal", "delete", "default")
    assert code == 1 and "cannot delete hub/default" in err and "spoke/default" in err
    assert server_snapshot(chef) == before
    data = crowbar_cli.json("hub", "proposal", "delete", "default", "--force")
    assert data == {"deleted": "hub/default", "forced": True}

    forced = crowbar.audit.entries(proposal="hub/default")
    assert [(e["action"], e["outcome"]) for e in forced][-2:] == [("deactivate", "deactivated"), ("delete", "ok")]
    for entry in forced[-2:]:
        assert entry["details"]["force"] is True
        assert entry["details"]["forced_past"] == ["spoke/default (hub_instance)", "spoke/default (mirror_instance)"]


def test_an_uncommitted_dependent_does_not_protect(crowbar, ready, chef):
    crowbar.proposals.create("hub", "default")
    crowbar.proposals.commit("hub", "default")
    crowbar.proposals.create("spoke", "default")  # links to hub/default, never committed
    assert crowbar.proposals.deactivate("hub", "default").status == "deactivated"
    crowbar.proposals.delete("hub", "default")


def test_dependencies_declared_by_the_hook_protect_too(crowbar, ready, chef):
    crowbar.proposals.create("gizmo", "default")
    crowbar.proposals.commit("gizmo", "default")
    crowbar.proposals.create("widget", "default", settings={"depends_on": "default"})
    crowbar.proposals.commit("widget", "default")
    with pytest.raises(ValidationError, match=r"widget/default \(dependencies\)"):
        crowbar.proposals.deactivate("gizmo", "default")


def test_optional_links_are_found_at_creation_when_exactly_one_committed_proposal_exists(crowbar, ready):
    crowbar.proposals.create("hub", "one")
    assert crowbar.proposals.create("spoke", "early").attributes["mirror_instance"] == "none"  # none committed
    crowbar.proposals.commit("hub", "one")
    spoke = crowbar.proposals.create("spoke", "found")
    assert spoke.attributes["mirror_instance"] == "one"
    assert any("mirror_instance: linked hub/one" in note for note in spoke.notes)
    given = crowbar.proposals.create("spoke", "given", settings={"mirror_instance": "none"})
    assert given.attributes["mirror_instance"] == "none"  # what the operator gave is kept
    crowbar.proposals.set("spoke", "found", {"mirror_instance": "none"})
    assert crowbar.proposals.get("spoke", "found").attributes["mirror_instance"] == "none"  # edits never re-link
    crowbar.proposals.create("hub", "two", settings={"elements.hub-server": ready[1]}, from_inventory=False)
    crowbar.proposals.commit("hub", "two")
    several = crowbar.proposals.create("spoke", "several", settings={"hub_instance": "one"})
    assert several.attributes["mirror_instance"] == "none"  # two to choose from: left to the operator


# -- the audit trail ---------------------------------------------------------------------------


def test_the_audit_trail_lists_a_scripted_session_in_order_without_secrets(crowbar, ready, fleet, chef,
                                                                           crowbar_cli):
    start = len(crowbar.audit.entries(limit=None))
    spare: list[str] = []
    steps = [
        (("widget", "proposal", "create", "default", "--set", "password=s3cret-one-XYZ"), 0),
        (("widget", "proposal", "edit", "default", "--set", "port=9000", "--set", "password=s3cret-two-XYZ"), 0),
        (("widget", "proposal", "commit", "default"), 0),
        (("widget", "proposal", "commit", "default"), 0),  # already applied: no entry
        (("widget", "proposal", "edit", "default", "--set", "mode=fast"), 0),
        (("widget", "proposal", "revert", "default", "2", "--commit"), 0),
        (("gizmo", "proposal", "create", "default", "--set", "after=missing", "--empty"), 0),
        (("gizmo", "proposal", "commit", "default"), 3),  # queued: widget/missing does not exist
        (("gizmo", "proposal", "dequeue", "default"), 0),
        "a machine boots (not an operator: no entry)",
        (("machines", "allocate", "SPARE"), 0),
        (("machines", "transition", "SPARE", "hardware-installing"), 0),
        (("hub", "proposal", "create", "default", "--empty"), 0),
        (("hub", "ping", "SPARE", "--proposal", "default"), 0),
        (("widget", "proposal", "deactivate", "default"), 0),
        (("widget", "proposal", "revert", "default", "99"), 1),  # refused: no entry
    ]
    for step in steps:
        if isinstance(step, str):
            spare = fleet.add(1, "compute")
            fleet.boot(spare, until="discovered")
            continue
        args, code = step
        status, out, err = crowbar_cli(*[spare[0] if a == "SPARE" else a for a in args])
        assert status == code, (args, status, err)

    entries = crowbar_cli.json("audit", "--limit", "1000")[start:]
    assert [(e["action"], e["target"], e["outcome"]) for e in entries] == [
        ("create", "widget/default", "ok"),
        ("edit", "widget/default", "ok"),
        ("commit", "widget/default", "applied"),
        ("edit", "widget/default", "ok"),
        ("revert", "widget/default", "ok"),
        ("commit", "widget/default", "applied"),
        ("create", "gizmo/default", "ok"),
        ("commit", "gizmo/default", "queued"),
        ("dequeue", "gizmo/default", "ok"),
        ("allocate", spare[0], "ok"),
        ("transition", spare[0], "hardware-installing"),
        ("create", "hub/default", "ok"),
        ("hub ping", "hub/default", "ok"),
        ("deactivate", "widget/default", "deactivated"),
    ]
    assert [e["revision"] for e in entries[:6]] == [1, 2, 2, 3, 4, 4]
    assert entries[1]["details"]["keys"] == ["attributes.widget.password.item", "attributes.widget.port"]
    assert entries[4]["details"]["reverted_to"] == 2 and entries[4]["details"]["from_revision"] == 3
    assert entries[2]["details"]["machines_written"] >= 4 and sorted(entries[2]["machines"]) == sorted(ready)
    assert entries[7]["details"]["reasons"] and "widget/missing" in entries[7]["details"]["reasons"][0]
    assert entries[10]["details"] == {"from": "discovered", "to": "hardware-installing"}
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    for entry in entries:
        assert entry["by"] == {"client": chef.config.client_name, "user": getpass.getuser(),
                               "host": entry["by"]["host"]} and entry["by"]["host"]
    trail = audit_dump(chef)
    for secret in ("s3cret-one-XYZ", "s3cret-two-XYZ", "generated-"):
        assert secret not in trail

    # Filters, in the API and the CLI.
    assert [e["action"] for e in crowbar.audit.entries(proposal="gizmo/default")] == ["create", "commit", "dequeue"]
    assert [e["action"] for e in crowbar_cli.json("audit", "--machine", spare[0])] == ["allocate", "transition",
                                                                                  "hub ping"]
    assert crowbar_cli.json("audit", "--since", "2999-01-01") == []
    assert len(crowbar_cli.json("audit", "--since", "1h", "--proposal", "widget/default")) == 7
    code, out, err = crowbar_cli("audit", "--proposal", "widget/default")
    assert code == 0 and "ACTION" in out and "revert" in out and "s3cret" not in out
    code, out, err = crowbar_cli("audit", "--since", "yesterday-ish")
    assert code == 1 and "neither a time" in err
    code, out, err = crowbar_cli("audit", "--proposal", "widget")  # said "no audit entries match"
    assert code == 1 and err.strip() == "error: a proposal is BARCLAMP/NAME (like nova/default), not 'widget'"


def test_audit_retention_is_bounded_and_pruned_by_writers(crowbar, chef):
    trail = AuditTrail(chef, keep=5, prune_every=3)
    ids = [trail.record("test", f"t{i}")["id"] for i in range(9)]
    left = chef.data_bags.items("crowbar_audit")
    # Pruned on the 1st, 3rd, 6th and 9th entries: never more than keep + prune_every - 1 in between.
    assert left == ids[-5:]
    chef.data_bags.create_item("crowbar_audit", {"id": "20000101T000000000000Z-00000000", "action": "old"})
    assert trail.prune() == ["20000101T000000000000Z-00000000"]  # past KEEP_DAYS
    assert [e["target"] for e in crowbar.audit.entries(limit=2)] == ["t7", "t8"]


def test_parse_since():
    import datetime as dt

    now = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.timezone.utc)
    assert parse_since("2h", now=now) == now - dt.timedelta(hours=2)
    assert parse_since("1d 6h", now=now) == now - dt.timedelta(hours=30)
    assert parse_since("2026-12-01", now=now) == dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    assert parse_since("2026-12-01T04:00:00Z", now=now).hour == 4
    with pytest.raises(ValidationError, match="neither a time"):
        parse_since("soon", now=now)


def test_bios_apply_is_audited_and_the_bmc_password_is_not(crowbar, fleet, chef, crowbar_cli, tmp_path):
    from barclamp_sdk.testing.bmcpeers import BmcLab

    password = "Bmc-s3cret-77"
    with BmcLab(tmp_path / "bmcs", ["good.example.com"], password=password) as lab:
        [good] = lab.names
        fleet.add(1, "compute", names=[good], wall=lambda n, i: lab.wall(n))
        crowbar.machines.discover()
        crowbar.machines.bmc.confirm(good, by="test operator")
        crowbar.proposals.create("bios", "default", settings={"bmc_username": "admin", "bmc_password": password})
        assert crowbar.proposals.commit("bios", "default").status == "applied"
        rows = crowbar_cli.json("bios", "apply", good)
        assert rows[0]["status"] == "applied"
    [entry] = crowbar.audit.entries(action="bios apply")
    assert (entry["target"], entry["machines"], entry["outcome"]) == ("bios/default", [good], "ok")
    assert entry["details"] == {"rows": 1, "warnings": 0}
    assert password not in audit_dump(chef)


def test_an_operation_failing_part_way_is_recorded_and_a_refusal_is_not(crowbar, chef):
    from barclamp_sdk.errors import DriftError, ServerError
    from barclamp_sdk.model.audit import recording

    for error in (ValidationError("bad input"), DriftError("hand-edited"), ServerError("PUT", "/roles/x", 500, ["boom"])):
        with pytest.raises(type(error)):
            with recording(crowbar.audit.record, "commit", "widget/default", proposal="widget/default"):
                raise error
    [entry] = crowbar.audit.entries()
    assert entry["action"] == "commit" and entry["outcome"].startswith("failed: ServerError")
