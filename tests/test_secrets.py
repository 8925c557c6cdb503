"""Secrets: Chef encrypted data bag items (v3), references, rotation."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient, RetryPolicy
from barclamp_sdk.errors import ConfigurationError, CrowbarError
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.secrets import SecretStore, decrypt_value, encrypt_value, load_secret, secret_paths
from tests.support.widgets import WidgetAttributes


def chef_style_decrypt(value: dict, secret: bytes):
    """Decrypt as Chef's Version3Decryptor does, with a different code path."""
    key = hashlib.sha256(secret).digest()
    decryptor = Cipher(algorithms.AES(key), modes.GCM(base64.b64decode(value["iv"]),
                                                     base64.b64decode(value["auth_tag"]))).decryptor()
    decryptor.authenticate_additional_data(b"")
    plain = decryptor.update(base64.b64decode(value["encrypted_data"])) + decryptor.finalize()
    return json.loads(plain)["json_wrapper"]


def test_values_are_encrypted_in_chefs_version_3_format():
    value = encrypt_value({"user": "grpadmin", "port": 22}, b"shared secret")
    assert set(value) == {"encrypted_data", "iv", "auth_tag", "version", "cipher"}
    assert value["version"] == 3 and value["cipher"] == "aes-256-gcm"
    assert len(base64.b64decode(value["iv"])) == 12
    assert len(base64.b64decode(value["auth_tag"])) == 16
    assert all(len(line) <= 60 for line in value["encrypted_data"].splitlines())
    assert value["iv"].endswith("\n")  # as Ruby's Base64.encode64 writes it
    assert chef_style_decrypt(value, b"shared secret") == {"user": "grpadmin", "port": 22}
    assert decrypt_value(value, b"shared secret") == {"user": "grpadmin", "port": 22}
    with pytest.raises(ValueError, match="authentication tag does not match"):
        decrypt_value(value, b"wrong")


def test_secret_file_is_read_like_chef_and_loose_files_are_refused(tmp_path):
    path = tmp_path / "secret"
    path.write_text("  s3cret-text \n")
    path.chmod(0o600)
    assert load_secret(path) == b"s3cret-text"
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="can be read by other users.*chmod 600"):
        load_secret(path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_secret(tmp_path / "none")


def test_secret_fields_are_found_in_the_model():
    assert secret_paths(WidgetAttributes) == ["password"]


def test_store_keeps_only_ciphertext_on_the_server(chef):
    store = SecretStore(chef, LockManager(chef), b"k1")
    refs = store.put("eqlx-default", {"san_password": "p@ss", "chap_password": "chap"})
    item = chef.data_bags.get_item("crowbar_secrets", "eqlx-default")
    assert "p@ss" not in json.dumps(item) and "chap" not in json.dumps(item).replace("chap_password", "")
    assert store.get(refs["san_password"]) == "p@ss"
    assert str(refs["san_password"]) == "crowbar_secrets/eqlx-default:san_password"
    store.put("eqlx-default", {"san_password": "new"})
    assert store.get(refs["san_password"]) == "new" and store.get(refs["chap_password"]) == "chap"
    with pytest.raises(CrowbarError, match="wrong encrypted data bag secret"):
        SecretStore(chef, LockManager(chef), b"other").get(refs["san_password"])


def test_no_secret_configured_says_how_to_configure(chef):
    store = SecretStore(chef, LockManager(chef), None)
    with pytest.raises(ConfigurationError, match="CHEF_ENCRYPTED_DATA_BAG_SECRET"):
        store.put("x", {"a": "b"})


def test_rotation_reencrypts_everything_and_resumes_after_an_outage(chef_server, chef, fault_proxy):
    store = SecretStore(chef, LockManager(chef), b"old")
    expected = {}
    for index in range(6):
        refs = store.put(f"item{index}", {"a": f"alpha{index}", "b": f"beta{index}"})
        expected.update({str(r): (r, v) for r, v in zip(refs.values(), (f"alpha{index}", f"beta{index}"))})
    proxy = fault_proxy()
    flaky = ChefClient(chef_server.config(server_url=proxy.url, retry=RetryPolicy(attempts=1)))
    interrupted = SecretStore(flaky, LockManager(flaky, lease=1.0), b"old")
    # Let a few items through, then the server "goes away".
    original = flaky.data_bags.update_item
    calls = {"n": 0}

    def update_then_fail(bag, item):
        calls["n"] += 1
        if calls["n"] == 3:
            proxy.fail_always("drop")
        return original(bag, item)

    flaky.data_bags.update_item = update_then_fail
    with pytest.raises(CrowbarError):
        interrupted.rotate(b"new")
    proxy.heal()
    rotated = SecretStore(chef, LockManager(chef, clock_skew=0.5), b"old")  # takes over the stale lock
    report = rotated.rotate(b"new")
    assert report["already_rotated"] >= 2 and report["rotated"] + report["already_rotated"] == 6
    fresh = SecretStore(chef, LockManager(chef), b"new")
    for ref, value in expected.values():
        assert fresh.get(ref) == value


def test_crowbar_refuses_a_loose_secret_file(chef_server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("abc")
    secret.chmod(0o640)
    with pytest.raises(ConfigurationError, match="encrypted data bag secret .* can be read by other users"):
        Crowbar(ChefClient(chef_server.config(encrypted_data_bag_secret=str(secret))))
