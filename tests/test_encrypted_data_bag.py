"""Chef encrypted data bag items of formats 0-3 on a real goiardi: read, rotated, failures named.

Items are written by tests/support/chef_format.py, the project's own writer of
Chef's published format (no library code), or by Ruby's OpenSSL following
Chef's Ruby code (tests/support/chef_edb.rb) when Ruby is installed.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from barclamp_sdk.api import Crowbar
from barclamp_sdk.chef import ChefClient
from barclamp_sdk.chef import encrypted_data_bag as edb
from barclamp_sdk.errors import ConfigurationError, CrowbarError
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.secrets import SecretStore, load_secret
from tests.support.chef_format import chef_decrypt_v3, chef_encrypt, chef_encrypt_item, ruby_strip

BAG = "crowbar_secrets"
RUBY_SCRIPT = Path(__file__).parent / "support" / "chef_edb.rb"
VALUES = {"san_password": "p@ss wörd", "chap": {"user": "grpadmin", "port": 3260, "on": True, "ids": [1, 2]}}
#: Made once by Ruby 3.1.2 / OpenSSL 3 with tests/support/chef_edb.rb from a secret file "kat-secret\n".
RUBY_VECTORS: dict[str, Any] = {
    "0": "ckV9B5ZAtvA6555GigoPkqZd0Q53aE/AETvibPH8czM=\n",
    "1": {"encrypted_data": "HBU8sK0LEmE2z6N9o/ltvb/T3XC9JUCZRguni5EhxYE2WWEIIHABsS7TousZ\n"
                            "jEed7gP2doPYK7FfOILNmKNrRA==\n",
          "iv": "x9XC767fuX82pTe3rmFd3Q==\n", "version": 1, "cipher": "aes-256-cbc"},
    "2": {"encrypted_data": "vT2/wRNJNqP7qGjvpR/btDNUU8SkKtqdIRRFMwW/0kdXb6JESA8tVqFhwqkP\n"
                            "s6p57N1hbOuOLRy5dEV90wvlIw==\n",
          "hmac": "oOAgAff8ge4ufh328iV1I1SwDKPK83SAWyEwAYF+p2g=\n",
          "iv": "l9OMzHxOZHPX/XCyZ1KAJw==\n", "version": 2, "cipher": "aes-256-cbc"},
    "3": {"encrypted_data": "7rZ/bljYtUTH/OcS4ngYgRifvMhOqwScqWamIJ1goKpL+AZ7fHFDkH3hIbgD\nzT1t\n",
          "iv": "D3Fj7i93b5h7PNNJ\n", "auth_tag": "c+M60IdcU5t0mjtGLtcRcQ==\n",
          "version": 3, "cipher": "aes-256-gcm"},
}


def store_item(chef: ChefClient, item: dict[str, Any]) -> None:
    chef.data_bags.ensure(BAG)
    chef.data_bags.create_item(BAG, item)


def secret_file(tmp_path: Path, content: bytes, name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(0o600)
    return path


def flip(b64: str, index: int = 0) -> str:
    """The Base64 text of the same bytes with one bit changed."""
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return edb.b64encode(bytes(raw))


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_items_of_every_format_written_by_the_tests_are_read_from_the_server(chef, version):
    store_item(chef, chef_encrypt_item(f"v{version}", VALUES, b"bag secret", version))
    raw = chef.data_bags.get_item(BAG, f"v{version}")
    assert "grpadmin" not in json.dumps(raw)
    store = SecretStore(chef, LockManager(chef), b"bag secret")
    for key, value in VALUES.items():
        assert store.get(store.ref(f"v{version}", key)) == value


def test_vectors_made_by_rubys_openssl_are_read():
    for version, value in RUBY_VECTORS.items():
        assert edb.decrypt(value, b"kat-secret") == {"user": "admin", "pw": "crowbar"}, version


def test_what_the_library_writes_is_chefs_format_3():
    value = edb.encrypt(["a", 1], b"s")
    assert chef_decrypt_v3(value, b"s") == ["a", 1]
    assert set(value) == edb._KEYS[3] and value["cipher"] == "aes-256-gcm"
    assert len(base64.b64decode(value["iv"])) == 12 and value["iv"].endswith("\n")


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (apt-get install ruby)")
def test_cross_check_with_rubys_openssl(tmp_path):
    path = secret_file(tmp_path, b"\x00 ruby secret\xc2\xa0\t\n")
    made = json.loads(subprocess.run(["ruby", str(RUBY_SCRIPT), "encrypt", str(path), json.dumps(VALUES)],
                                     check=True, capture_output=True, text=True, timeout=60).stdout)
    secret = load_secret(path)
    assert secret == b"ruby secret\xc2\xa0"
    for version, value in made.items():
        assert edb.decrypt(value, secret) == VALUES, version
    back = subprocess.run(["ruby", str(RUBY_SCRIPT), "decrypt", str(path)], input=json.dumps(edb.encrypt(VALUES, secret)),
                          check=True, capture_output=True, text=True, timeout=60).stdout
    assert json.loads(back) == VALUES


def failure(chef: ChefClient, item: str, key: str, secret: bytes = b"right") -> str:
    with pytest.raises(CrowbarError) as caught:
        SecretStore(chef, LockManager(chef), secret).get({"data_bag": BAG, "item": item, "key": key})
    return str(caught.value)


def test_each_failure_names_its_real_cause(chef):
    two = {"a": "alpha", "b": "beta"}
    for version in (0, 1, 2, 3):
        store_item(chef, chef_encrypt_item(f"v{version}", two, b"right", version))
    v2 = chef_encrypt_item("hmac", two, b"right", 2)
    v2["a"]["hmac"] = flip(v2["a"]["hmac"])
    store_item(chef, v2)
    v3 = chef_encrypt_item("tag", two, b"right", 3)
    v3["a"]["auth_tag"] = flip(v3["a"]["auth_tag"])
    store_item(chef, v3)
    data = chef_encrypt_item("data", {"a": "alpha"}, b"right", 3)  # alone in its item
    data["a"]["encrypted_data"] = flip(data["a"]["encrypted_data"])
    store_item(chef, data)
    store_item(chef, {"id": "odd", "plain": "hunter2", "obj": {"x": 1}, "v4": {**chef_encrypt("x", b"right", 3),
               "version": 4}, "rc4": {**chef_encrypt("x", b"right", 1), "cipher": "rc4"},
               "iv": {**chef_encrypt("x", b"right", 3), "iv": edb.b64encode(b"short")},
               "b64": {**chef_encrypt("x", b"right", 2), "encrypted_data": "not base64!"}})

    for version in (0, 1, 2, 3):
        message = failure(chef, f"v{version}", "a", b"wrong")
        assert "wrong encrypted data bag secret: it opens none of the 2 values of this item" in message, message
    assert ("the value was altered after it was written: its HMAC does not match (format 2), though the same "
            "secret opens 'b' of this item") in failure(chef, "hmac", "a")
    assert ("the value was altered after it was written: its authentication tag does not match (format 3)"
            in failure(chef, "tag", "a"))
    assert ("the value was altered or written under another secret: its authentication tag does not match "
            "(format 3), though this secret opens item") in failure(chef, "data", "a")
    assert "not an encrypted value: a plain string" in failure(chef, "odd", "plain")
    assert "not an encrypted value: a plain object without 'version'" in failure(chef, "odd", "obj")
    assert "unsupported encrypted data bag format version 4" in failure(chef, "odd", "v4")
    assert "unsupported cipher 'rc4' in a format 1 value" in failure(chef, "odd", "rc4")
    assert "corrupted format 3 value: iv is 5 bytes, not 12" in failure(chef, "odd", "iv")
    assert "corrupted value: encrypted_data is not valid Base64" in failure(chef, "odd", "b64")
    for key in ("plain", "obj", "v4", "rc4", "iv", "b64"):
        assert "secret" not in failure(chef, "odd", key).split(":", 1)[1]  # never blamed on the secret


def test_a_single_value_alone_in_the_bag_says_both_causes(chef):
    store_item(chef, chef_encrypt_item("only", {"a": "alpha"}, b"right", 3))
    assert ("wrong encrypted data bag secret, or the value was altered: its authentication tag does not match"
            in failure(chef, "only", "a", b"wrong"))
    store_item(chef, chef_encrypt_item("other", {"a": "alpha"}, b"right", 2))
    assert ("wrong encrypted data bag secret: it opens none of 1 other values of this data bag"
            in failure(chef, "only", "a", b"wrong"))


def test_rotation_rewrites_a_mixed_bag_as_format_3_and_finishes(chef):
    expected = {}
    for version in (0, 1, 2, 3):
        store_item(chef, chef_encrypt_item(f"v{version}", {"k": f"value {version}", "n": version}, b"old", version))
        expected[f"v{version}"] = {"k": f"value {version}", "n": version}
    mixed = {"id": "mixed", "one": chef_encrypt("first", b"old", 1), "three": chef_encrypt("third", b"old", 3),
             "zero": chef_encrypt({"y": [1]}, b"old", 0)}
    store_item(chef, mixed)
    expected["mixed"] = {"one": "first", "three": "third", "zero": {"y": [1]}}
    store_item(chef, chef_encrypt_item("knife-new", {"k": "written by knife"}, b"new", 2))  # already new secret
    expected["knife-new"] = {"k": "written by knife"}

    store = SecretStore(chef, LockManager(chef), b"old")
    assert store.rotate(b"new\n") == {"rotated": 6, "already_rotated": 0}
    for item_id, values in expected.items():
        item = chef.data_bags.get_item(BAG, item_id)
        for key, value in values.items():
            assert item[key]["version"] == 3 and chef_decrypt_v3(item[key], b"new") == value
    assert SecretStore(chef, LockManager(chef), b"old").rotate(b"new") == {"rotated": 0, "already_rotated": 6}
    assert "wrong encrypted data bag secret" in failure(chef, "v1", "k", b"old")


def test_rotation_stops_on_a_value_neither_secret_opens_and_says_why(chef):
    store_item(chef, chef_encrypt_item("a", {"k": "v"}, b"old", 1))
    store_item(chef, chef_encrypt_item("b", {"k": "v", "j": "w"}, b"third", 2))
    with pytest.raises(CrowbarError, match=r"crowbar_secrets/b:\w cannot be rotated: .*wrong encrypted "
                                           r"data bag secret: it opens none of the 2 values"):
        SecretStore(chef, LockManager(chef), b"old").rotate(b"new")
    assert chef.data_bags.get_item(BAG, "b")["k"]["version"] == 2  # untouched


def test_a_binary_secret_file_works_end_to_end(chef_server, chef, tmp_path, caplog):
    openssl = shutil.which("openssl")
    raw = subprocess.run([openssl, "rand", "512"], check=True, capture_output=True).stdout if openssl else b""
    raw = b"\xff\xfe\x80" + raw + bytes(range(256)) + b"\n"  # never valid UTF-8
    path = secret_file(tmp_path, raw)
    assert load_secret(path) == ruby_strip(raw) == raw[:-1]
    assert "is binary, not UTF-8" in caplog.text and "openssl rand -base64 512" in caplog.text
    crowbar = Crowbar(ChefClient(chef_server.config(encrypted_data_bag_secret=str(path))))
    refs = crowbar.secrets.put("bin", {"pw": "s3cret"})
    assert crowbar.secrets.get(refs["pw"]) == "s3cret"
    assert chef_decrypt_v3(chef.data_bags.get_item(BAG, "bin")["pw"], raw[:-1]) == "s3cret"


@pytest.mark.parametrize("content, kept", [
    (b"\x00\x0b\x0c \tknife-secret\r\n\x00", b"knife-secret"),
    (b"\x00\x00abc\x00def\x00\x0b", b"abc\x00def"),
    ("\u00a0nbsp secret\u00a0\n".encode(), "\u00a0nbsp secret\u00a0".encode()),
    ("\u2003em\u3000".encode(), "\u2003em\u3000".encode()),
    (b"c2VjcmV0LWZyb20ta25pZmU=\n", b"c2VjcmV0LWZyb20ta25pZmU="),  # openssl rand -base64, as Chef's docs say
])
def test_secrets_are_stripped_exactly_as_ruby_strips_them(chef, tmp_path, content, kept):
    path = secret_file(tmp_path, content)
    assert load_secret(path) == kept == ruby_strip(content)
    store_item(chef, chef_encrypt_item("ws", {"k": "v"}, kept, 2))
    assert SecretStore.from_file(chef, LockManager(chef), path).get({"data_bag": BAG, "item": "ws", "key": "k"}) == "v"


def ruby_strip_of(path: Path, encoding: str) -> bytes | None:
    """``IO.read(path).strip`` in Ruby reading as ``encoding`` (Chef forces UTF-8); None if it raises."""
    done = subprocess.run(["ruby", "-E", encoding, "-e", "print IO.read(ARGV[0]).strip.b", str(path)],
                          capture_output=True, timeout=60)
    return done.stdout if done.returncode == 0 else None


@pytest.mark.skipif(shutil.which("ruby") is None, reason="needs ruby (apt-get install ruby)")
def test_ruby_strips_the_same_bytes(tmp_path):
    texts = [b"\x00\x0b\x0c \tknife\r\n\x00", "\u00a0x\u00a0\n".encode(), b"\x00a\x00 \x00", "\u2003\u3000y\n".encode()]
    for index, content in enumerate(texts):
        path = secret_file(tmp_path, content, f"t{index}")
        assert load_secret(path) == ruby_strip_of(path, "UTF-8") == ruby_strip_of(path, "ASCII-8BIT"), content
    binary = secret_file(tmp_path, b"\x00\xff\xfe secret\x80\xff\x0b\n", "binary")
    assert load_secret(binary) == ruby_strip_of(binary, "ASCII-8BIT") == b"\xff\xfe secret\x80\xff"
    assert ruby_strip_of(binary, "UTF-8") is None  # what Chef (UTF-8 forced) does with it: ArgumentError


def test_an_empty_or_blank_secret_file_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="is empty"):
        load_secret(secret_file(tmp_path, b"\x00 \t\n\x0b\x0c\r\x00"))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(value=JSON, secret=st.binary(min_size=1, max_size=64), version=st.sampled_from([1, 2, 3]))
def test_any_value_and_secret_round_trip_in_formats_1_to_3(value, secret, version):
    assert edb.decrypt(chef_encrypt(value, secret, version), secret) == value


@settings(max_examples=40, deadline=None)
@given(value=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40) | st.integers(),
       secret=st.binary(min_size=1, max_size=64))
def test_any_value_and_secret_round_trip_in_format_0(value, secret):
    assert edb.decrypt(chef_encrypt(value, secret, 0), secret) == value


@settings(max_examples=150, deadline=None)
@given(value=JSON, version=st.sampled_from([2, 3]), data=st.data())
def test_an_authenticated_value_with_any_bit_flipped_is_never_read(value, version, data):
    encrypted = chef_encrypt(value, b"s", version)
    field = data.draw(st.sampled_from(sorted(k for k in encrypted if k not in ("version", "cipher"))))
    length = len(base64.b64decode(encrypted[field]))
    position, bit = data.draw(st.integers(0, length - 1)), data.draw(st.integers(0, 7))
    raw = bytearray(base64.b64decode(encrypted[field]))
    raw[position] ^= 1 << bit
    encrypted[field] = edb.b64encode(bytes(raw))
    with pytest.raises((edb.SecretMismatch, edb.CorruptedValue)):
        edb.decrypt(encrypted, b"s")
    if field != "iv":  # format 2's HMAC covers encrypted_data only, so an altered iv shows as corruption
        with pytest.raises(edb.SecretMismatch):
            edb.decrypt(encrypted, b"s")


def test_cli_checks_and_rotates_a_mixed_bag(crowbar_cli, chef, tmp_path, monkeypatch):
    from barclamp_sdk.testing.pytest_plugin import TEST_SECRET

    for version in (0, 1, 2, 3):
        store_item(chef, chef_encrypt_item(f"v{version}", {"k": version}, TEST_SECRET, version))
    code, out, _ = crowbar_cli("secrets", "check", "--json")
    assert code == 0 and sorted(row["format"] for row in json.loads(out)) == [0, 1, 2, 3]
    new = secret_file(tmp_path, b"\x00the new secret\xc2\xa0\n", "new")
    code, out, err = crowbar_cli("secrets", "rotate", str(new))
    assert code == 0 and "rotated 4 items, 0 already rotated" in out, (out, err)
    code, out, _ = crowbar_cli("secrets", "check")
    assert code == 1 and "wrong encrypted data bag secret: it opens none of 3 other values" in out
    monkeypatch.setenv("CHEF_ENCRYPTED_DATA_BAG_SECRET", str(new))
    code, out, _ = crowbar_cli("secrets", "check", "--json")
    assert code == 0 and [row["format"] for row in json.loads(out)] == [3, 3, 3, 3]
    store_item(chef, {"id": "bad", "k": {**chef_encrypt("x", b"the new secret\xc2\xa0", 3), "version": 9}})
    code, out, _ = crowbar_cli("secrets", "check")
    assert code == 1 and "unsupported encrypted data bag format version 9" in out
