"""The Chef API client against a real goiardi: signing, errors, objects, search."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from barclamp_sdk.chef import ChefClient, ChefSigner, RetryPolicy
from barclamp_sdk.chef.auth import canonical_path
from barclamp_sdk.errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    InvalidResponse,
    NotFound,
    Unauthorized,
    ValidationError,
)
from barclamp_sdk.testing.tls import self_signed_certificate
from barclamp_sdk.local import LocalChefServer
from barclamp_sdk.testing import wait_indexed


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_each_signing_protocol_is_accepted(chef_server, chef, version):
    client = chef_server.new_client(sign_version=version)
    name = f"signed-{version.replace('.', '')}"
    client.roles.create({"name": name, "run_list": ["recipe[a]"], "description": version})
    role = client.roles.get(name)
    assert role["description"] == version
    assert role["run_list"] == ["recipe[a]"]
    client.roles.delete(name)
    assert client.roles.find(name) is None


def test_signature_1_3_covers_path_and_api_version():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = ChefSigner("alice", key)
    headers = signer.headers_for("GET", "/organizations/acme//nodes/", b"")
    signature = base64.b64decode(
        "".join(headers[f"X-Ops-Authorization-{i}"] for i in range(1, 7) if f"X-Ops-Authorization-{i}" in headers)
    )
    canonical = (
        "Method:GET\nPath:/organizations/acme/nodes\n"
        f"X-Ops-Content-Hash:{base64.b64encode(hashlib.sha256(b'').digest()).decode()}\n"
        f"X-Ops-Sign:version=1.3\nX-Ops-Timestamp:{headers['X-Ops-Timestamp']}\n"
        "X-Ops-UserId:alice\nX-Ops-Server-API-Version:1"
    )
    key.public_key().verify(signature, canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert headers["X-Ops-Sign"] == "algorithm=sha256;version=1.3"
    assert all(len(v) <= 60 for k, v in headers.items() if k.startswith("X-Ops-Authorization"))


def test_canonical_path_squeezes_slashes_and_trailing_slash():
    assert canonical_path("//nodes///x/") == "/nodes/x"
    assert canonical_path("/") == "/"


def test_wrong_key_is_unauthorized_with_hint(chef_server, chef, tmp_path):
    wrong = tmp_path / "wrong.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    from cryptography.hazmat.primitives import serialization

    wrong.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption()))
    wrong.chmod(0o600)
    client = ChefClient(chef_server.config(client_key_path=str(wrong)))
    with pytest.raises(Unauthorized) as info:
        client.get("/nodes")
    message = str(info.value)
    assert info.value.status == 401
    assert "GET /nodes" in message
    assert "clock" in message and "key" in message


def test_missing_object_is_not_found_with_server_message(chef):
    with pytest.raises(NotFound) as info:
        chef.nodes.get("no-such-node")
    assert info.value.status == 404
    assert info.value.messages == ["node 'no-such-node' not found"]
    assert "no-such-node" in str(info.value)


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_names_no_url_can_address_are_refused_before_sending(chef, name):
    before = chef.stats.snapshot()
    with pytest.raises(ValidationError, match="cannot address"):
        chef.nodes.create({"name": name, "run_list": []})
    with pytest.raises(ValidationError, match="cannot address"):
        chef.roles.get(name)
    with pytest.raises(ValidationError, match="cannot address"):
        chef.data_bags.get_item("crowbar", name)
    after = chef.stats.snapshot()
    assert after["reads"] == before["reads"] and after["writes"] == before["writes"]


def test_duplicate_create_is_conflict(chef):
    chef.data_bags.create("things")
    chef.data_bags.create_item("things", {"id": "one", "v": 1})
    with pytest.raises(Conflict) as info:
        chef.data_bags.create_item("things", {"id": "one", "v": 2})
    assert "already exists" in str(info.value)
    assert chef.data_bags.get_item("things", "one")["v"] == 1


def test_bad_request_carries_the_server_message(chef):
    with pytest.raises(BadRequest) as info:
        list(chef.search("node", "name:(unbalanced"))
    assert info.value.status == 400


def test_objects_crud(chef):
    node = {"name": "n1.example.com", "chef_type": "node", "json_class": "Chef::Node",
            "chef_environment": "_default", "run_list": [], "normal": {"a": 1},
            "default": {}, "override": {}, "automatic": {"ipaddress": "10.0.0.1"}}
    chef.nodes.create(node)
    assert chef.nodes.list() == ["n1.example.com"]
    stored = chef.nodes.get("n1.example.com")
    stored["normal"]["a"] = 2
    chef.nodes.update("n1.example.com", stored)
    assert chef.nodes.get("n1.example.com")["normal"] == {"a": 2}
    chef.environments.create({"name": "staging", "default_attributes": {"x": 1}})
    assert "staging" in chef.environments.list()
    chef.data_bags.ensure("bag")
    chef.data_bags.ensure("bag")
    chef.data_bags.create_item("bag", {"id": "i1"})
    chef.data_bags.update_item("bag", {"id": "i1", "k": "v"})
    assert chef.data_bags.items("bag") == ["i1"]
    assert chef.data_bags.get_item("bag", "i1") == {"id": "i1", "k": "v"}
    with pytest.raises(NotFound):
        chef.data_bags.update_item("bag", {"id": "missing"})
    created = chef.clients.create({"name": "worker", "admin": False})
    assert "BEGIN" in created["private_key"]


def test_search_pages_return_every_object_once(chef):
    for i in range(25):
        chef.roles.create({"name": f"page-{i:02d}", "default_attributes": {"n": i}})
    wait_indexed(chef, "role", [f"page-{i:02d}" for i in range(25)])  # search lags writes (goiardi indexes later)
    full = [r["name"] for r in chef.search("role", "name:page-*", rows=10)]
    assert sorted(full) == [f"page-{i:02d}" for i in range(25)]
    partial = list(chef.partial_search("role", "name:page-*", {"name": ["name"], "n": ["default_attributes", "n"]}, rows=10))
    assert sorted(r["name"] for r in partial) == [f"page-{i:02d}" for i in range(25)]
    assert {r["name"]: r["n"] for r in partial}["page-07"] == 7
    # A page size that divides the total exactly still ends.
    assert len(list(chef.partial_search("role", "name:page-*", {"name": ["name"]}, rows=5))) == 25


def test_partial_search_returns_only_requested_keys(chef):
    chef.nodes.create({"name": "big", "automatic": {"memory": {"total": "1024kB"}, "huge": "x" * 5000}})
    wait_indexed(chef, "node", ["big"])
    rows = list(chef.partial_search("node", "name:big", {"mem": ["memory", "total"], "none": ["nope", "x"]}))
    assert rows == [{"mem": "1024kB", "none": None}]


def test_request_counters(chef):
    before = chef.stats.snapshot()
    chef.roles.create({"name": "counted"})
    chef.roles.get("counted")
    after = chef.stats.snapshot()
    assert after["writes"] - before["writes"] == 1
    assert after["reads"] - before["reads"] == 1


def test_organization_urls_are_used_unchanged(chef_server, fault_proxy):
    proxy = fault_proxy()
    client = ChefClient(chef_server.config(server_url=proxy.url + "/organizations/acme"))
    with pytest.raises(InvalidResponse) as info:
        client.get("/nodes")
    assert proxy.seen == [("GET", "/organizations/acme/nodes")]
    assert "empty body" in str(info.value) and "organizations" in str(info.value)


def test_tls_is_verified_by_default_and_a_ca_bundle_works(tmp_path, caplog):
    cert, key = self_signed_certificate(tmp_path / "tls")
    with LocalChefServer(tmp_path / "srv", tls=(cert, key)) as server:
        assert server.url.startswith("https://")
        # The CA bundle given in the settings is used (not REQUESTS_CA_BUNDLE).
        assert server.client().get("/nodes") == {}
        strict = ChefClient(server.config(verify=True, retry=RetryPolicy(attempts=3)))
        with pytest.raises(ConnectionFailed) as info:
            strict.get("/nodes")
        assert "certificate verification failed" in str(info.value)
        assert "after 1 attempt " in str(info.value)  # not retried: it will not heal
        with caplog.at_level("WARNING"):
            insecure = ChefClient(server.config(verify=False))
        assert "TLS verification is OFF" in caplog.text
        assert insecure.get("/nodes") == {}
