"""Test-side writer of Chef's encrypted data bag formats 0-3, independent of the library.

Written from Chef's published Ruby (lib/chef/encrypted_data_bag_item/encryptor.rb,
and Chef 0.10's format 0: ``Base64.encode64(cipher.update(YAML.dump(v)) + cipher.final)``
after ``cipher.pkcs5_keyivgen(secret)``), with cryptography's low-level primitives
and hand-written padding / key derivation: it shares no code with
``barclamp_sdk.chef.encrypted_data_bag`` so the two check each other.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def encode64(data: bytes) -> str:
    """Ruby's Base64.encode64: lines of 60 characters, each ending in a newline."""
    text = base64.standard_b64encode(data).decode("ascii")
    lines = [text[start:start + 60] for start in range(0, len(text), 60)]
    return "\n".join(lines) + "\n"


def _sha256(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize()


def _md5(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.MD5())
    digest.update(data)
    return digest.finalize()


def _pkcs7(data: bytes) -> bytes:
    count = 16 - len(data) % 16
    return data + bytes([count]) * count


def evp_bytes_to_key(password: bytes, key_len: int = 32, iv_len: int = 16, count: int = 2048) -> tuple[bytes, bytes]:
    """OpenSSL's EVP_BytesToKey(EVP_md5, salt=NULL, count) as in crypto/evp/evp_key.c."""
    material = b""
    previous = b""
    while len(material) < key_len + iv_len:
        md_buf = _md5(previous + password)
        for _ in range(1, count):
            md_buf = _md5(md_buf)
        material += md_buf
        previous = md_buf
    return material[:key_len], material[key_len:key_len + iv_len]


def _cbc(key: bytes, iv: bytes, plain: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(_pkcs7(plain)) + encryptor.finalize()


def _serialized(value: Any) -> bytes:
    # FFI_Yajl::Encoder.encode(json_wrapper: value)
    return json.dumps({"json_wrapper": value}, ensure_ascii=False).encode("utf-8")


def chef_encrypt(value: Any, secret: bytes, version: int) -> Any:
    """One value encrypted as Chef writes format ``version`` (0 to 3)."""
    if version == 0:
        key, iv = evp_bytes_to_key(secret)
        return encode64(_cbc(key, iv, yaml.safe_dump(value).encode("utf-8")))
    key = _sha256(secret)
    if version in (1, 2):
        iv = os.urandom(16)
        encrypted_data = encode64(_cbc(key, iv, _serialized(value)))
        out: dict[str, Any] = {"encrypted_data": encrypted_data, "iv": encode64(iv),
                               "version": version, "cipher": "aes-256-cbc"}
        if version == 2:
            mac = crypto_hmac.HMAC(secret, hashes.SHA256())
            mac.update(encrypted_data.encode("ascii"))  # the Base64 text, as stored
            out["hmac"] = encode64(mac.finalize())
        return out
    if version == 3:
        iv = os.urandom(12)
        encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
        encryptor.authenticate_additional_data(b"")
        data = encryptor.update(_serialized(value)) + encryptor.finalize()
        return {"encrypted_data": encode64(data), "iv": encode64(iv), "auth_tag": encode64(encryptor.tag),
                "version": 3, "cipher": "aes-256-gcm"}
    raise ValueError(f"Chef has no format {version}")


def chef_encrypt_item(item_id: str, values: dict[str, Any], secret: bytes, version: int) -> dict[str, Any]:
    """A whole item as ``Chef::EncryptedDataBagItem.encrypt_data_bag_item`` builds it."""
    return {"id": item_id, **{key: chef_encrypt(value, secret, version) for key, value in values.items()}}


def chef_decrypt_v3(value: dict[str, Any], secret: bytes) -> Any:
    """Format 3 read as Chef's Version3Decryptor reads it."""
    decryptor = Cipher(algorithms.AES(_sha256(secret)),
                       modes.GCM(base64.b64decode(value["iv"]), base64.b64decode(value["auth_tag"]))).decryptor()
    decryptor.authenticate_additional_data(b"")
    plain = decryptor.update(base64.b64decode(value["encrypted_data"])) + decryptor.finalize()
    return json.loads(plain)["json_wrapper"]


def ruby_strip(raw: bytes) -> bytes:
    """Ruby >= 3.0 String#strip on bytes, written out character by character."""
    blanks = {0x00, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20}
    start, end = 0, len(raw)
    while start < end and raw[start] in blanks:
        start += 1
    while end > start and raw[end - 1] in blanks:
        end -= 1
    return raw[start:end]
