"""Chef encrypted data bag values, formats 0 to 3, as ``Chef::EncryptedDataBagItem`` does it.

Each key of an encrypted item except ``id`` holds one encrypted value:

* format 0 (Chef 0.10; read only): a bare Base64 string, AES-256-CBC under
  OpenSSL's ``EVP_BytesToKey`` (Ruby ``Cipher#pkcs5_keyivgen(secret)``: MD5,
  no salt, 2048 rounds) of the secret; the plain text is YAML.
* format 1 (Chef 11): ``{"encrypted_data", "iv", "version": 1, "cipher":
  "aes-256-cbc"}``, key = SHA-256(secret), random 16-byte IV, plain text the
  JSON ``{"json_wrapper": value}``. No integrity check.
* format 2 (Chef 12 default): format 1 plus ``"hmac"``: Base64 of
  HMAC-SHA256 keyed with the secret itself over the *Base64 text* of
  ``encrypted_data`` exactly as stored (newlines included).
* format 3 (written here): AES-256-GCM under SHA-256(secret), random
  12-byte IV, empty associated data, 16-byte ``auth_tag``.

Base64 is written as Ruby's ``Base64.encode64`` writes it (60-character
lines, each ending in a newline). A secret is bytes (``openssl rand 512``
output works), stripped by :func:`strip_secret` as Ruby's ``String#strip``
strips it.

Failures are :class:`EncryptedValueError` subclasses naming the real cause.
Nothing is decrypted before its HMAC or tag verified: whether a mismatch
means a wrong secret or an altered value is decided from *other* values
(:func:`explain`), never from unauthenticated plain text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from barclamp_sdk.errors import CrowbarError

log = logging.getLogger(__name__)

CBC = "aes-256-cbc"
GCM = "aes-256-gcm"
#: The format written by :func:`encrypt`.
WRITE_VERSION = 3
READ_VERSIONS = (0, 1, 2, 3)
#: What Ruby's String#strip removes (Ruby >= 3.0 at both ends): NUL, \t, \n, \v, \f, \r, space.
RUBY_STRIP_BYTES = b"\x00\t\n\x0b\x0c\r "
_KEYS = {
    1: {"encrypted_data", "iv", "version", "cipher"},
    2: {"encrypted_data", "hmac", "iv", "version", "cipher"},
    3: {"encrypted_data", "iv", "auth_tag", "version", "cipher"},
}


class EncryptedValueError(CrowbarError, ValueError):
    """An encrypted data bag value cannot be read; the subclass names why."""


class NotEncrypted(EncryptedValueError):
    """The value is not an encrypted data bag value at all."""


class UnsupportedFormat(EncryptedValueError):
    """A format version or cipher this library (and Chef) does not read."""


class CorruptedValue(EncryptedValueError):
    """The value is malformed (bad Base64, lengths, fields); not a secret problem."""


class SecretMismatch(EncryptedValueError):
    """The secret does not open the value: a wrong secret or an altered value.

    Cryptography cannot tell these apart from one value; :func:`explain`
    decides with the help of other values.
    """


class WrongSecret(SecretMismatch):
    """Formats 0 and 1 (no integrity check): padding or plain text invalid."""


class HmacMismatch(SecretMismatch):
    """Format 2: the HMAC does not match."""


class AuthTagMismatch(SecretMismatch):
    """Format 3: the GCM authentication tag does not match."""


def strip_secret(raw: bytes) -> bytes:
    """Strip a secret as Ruby's ``String#strip`` does (Ruby >= 3.0, Chef >= 17).

    Only NUL and ASCII whitespace (\\t \\n \\v \\f \\r space) at both ends;
    Unicode spaces such as U+00A0 are kept. Ruby 2.x (Chef <= 16) kept
    *leading* NULs, so a secret file starting with NUL differs there.
    """
    return raw.strip(RUBY_STRIP_BYTES)


def parse_secret(raw: bytes, source: str = "the secret") -> bytes:
    """The secret in the bytes of a secret file: :func:`strip_secret`, any bytes accepted.

    Chef forces Ruby's default external encoding to UTF-8, and Ruby's strip
    raises "invalid byte sequence in UTF-8" on many binary strings (58% of
    ``openssl rand 512`` files with Ruby 3.1), so a binary secret is logged
    as one Chef itself may refuse.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s is binary, not UTF-8: barclamp-sdk reads it, but Chef's load_secret may fail on it "
                    "(invalid byte sequence in UTF-8); `openssl rand -base64 512 | tr -d '\\r\\n'` "
                    "makes a secret both read", source)
    return strip_secret(raw)


def format_version(value: Any) -> Any:
    """The format version Chef would use: ``value["version"]``, 0 for a non-hash."""
    return value.get("version") if isinstance(value, dict) else 0


def b64encode(data: bytes) -> str:
    """Base64 as Ruby's ``Base64.encode64`` writes it (60-character lines)."""
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


def _b64decode(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise CorruptedValue(f"corrupted value: {field} is {type(value).__name__}, not Base64 text")
    try:
        return base64.b64decode(value)
    except (binascii.Error, ValueError):
        raise CorruptedValue(f"corrupted value: {field} is not valid Base64") from None


def _check_shape(value: Any) -> int:
    """The format version of a well-formed value, or the error naming what is wrong."""
    if value is None or isinstance(value, (bool, int, float, list)):
        raise NotEncrypted(f"not an encrypted value: a plain {type(value).__name__}")
    version = format_version(value)
    if isinstance(value, dict):
        if "version" not in value:
            raise NotEncrypted("not an encrypted value: a plain object without 'version'")
        if not isinstance(version, int) or isinstance(version, bool) or version not in READ_VERSIONS[1:]:
            raise UnsupportedFormat(
                f"unsupported encrypted data bag format version {version!r} "
                f"(Chef's are 0 to 3; this library reads all of them)"
            )
        missing = sorted(_KEYS[version] - set(value))
        if missing:
            raise CorruptedValue(f"corrupted format {version} value: missing {', '.join(missing)}")
        expected = GCM if version == 3 else CBC
        if value["cipher"] != expected:
            raise UnsupportedFormat(
                f"unsupported cipher {value['cipher']!r} in a format {version} value (Chef uses {expected})"
            )
        return version
    if not isinstance(value, str):
        raise NotEncrypted(f"not an encrypted value: a {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        data = b""
    if not data or len(data) % 16:
        raise NotEncrypted("not an encrypted value: a plain string (not format-0 ciphertext)")
    return 0


def _cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes | None:
    """AES-256-CBC with PKCS#7 padding; None when the padding is invalid."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


def _bytes_to_key(secret: bytes, rounds: int = 2048) -> tuple[bytes, bytes]:
    """OpenSSL EVP_BytesToKey(MD5, no salt) as Ruby's ``pkcs5_keyivgen`` calls it: key, IV."""
    out, block = b"", b""
    while len(out) < 48:
        block = hashlib.md5(block + secret).digest()
        for _ in range(rounds - 1):
            block = hashlib.md5(block).digest()
        out += block
    return out[:32], out[32:48]


def _unwrap(plain: bytes, *, authenticated: bool, version: int) -> Any:
    try:
        wrapper = json.loads(plain)
        return wrapper["json_wrapper"]
    except (ValueError, TypeError, KeyError):
        if authenticated:
            altered = " or its iv was altered (format 2's HMAC does not cover it)" if version == 2 else ""
            raise CorruptedValue(
                f"corrupted format {version} value: it authenticates with this secret but does not "
                f"hold JSON {{\"json_wrapper\": ...}}: written by a faulty client{altered}"
            ) from None
        raise WrongSecret(f"it does not decrypt with this secret (format {version}, not JSON)") from None


def decrypt(value: Any, secret: bytes) -> Any:
    """The plain value of one encrypted data bag value of format 0, 1, 2 or 3."""
    version = _check_shape(value)
    if version == 0:
        data = _b64decode(value, "the format-0 value")
        key, iv = _bytes_to_key(secret)
        plain = _cbc_decrypt(key, iv, data)
        if plain is None:
            raise WrongSecret("it does not decrypt with this secret (format 0, bad padding)")
        try:
            return yaml.safe_load(plain.decode())
        except (UnicodeDecodeError, yaml.YAMLError):
            raise WrongSecret("it does not decrypt with this secret (format 0, not YAML)") from None
    data = _b64decode(value["encrypted_data"], "encrypted_data")
    iv = _b64decode(value["iv"], "iv")
    key = hashlib.sha256(secret).digest()
    if version == 3:
        tag = _b64decode(value["auth_tag"], "auth_tag")
        if len(iv) != 12:
            raise CorruptedValue(f"corrupted format 3 value: iv is {len(iv)} bytes, not 12")
        if len(tag) != 16:
            raise CorruptedValue(f"corrupted format 3 value: auth_tag is {len(tag)} bytes, not 16")
        try:
            plain = AESGCM(key).decrypt(iv, data + tag, b"")
        except InvalidTag:
            raise AuthTagMismatch("its authentication tag does not match (format 3)") from None
        return _unwrap(plain, authenticated=True, version=3)
    if len(iv) != 16:
        raise CorruptedValue(f"corrupted format {version} value: iv is {len(iv)} bytes, not 16")
    if version == 2:
        expected = hmac.new(secret, value["encrypted_data"].encode(), hashlib.sha256).digest()
        candidate = _b64decode(value["hmac"], "hmac")
        if not hmac.compare_digest(expected, candidate):
            raise HmacMismatch("its HMAC does not match (format 2)")
    if not data or len(data) % 16:
        raise CorruptedValue(
            f"corrupted format {version} value: encrypted_data is {len(data)} bytes, not a multiple of 16"
        )
    plain = _cbc_decrypt(key, iv, data)
    if plain is None:
        if version == 2:
            raise CorruptedValue("corrupted format 2 value: its HMAC matches but its padding is invalid")
        raise WrongSecret("it does not decrypt with this secret (format 1, bad padding)")
    return _unwrap(plain, authenticated=version == 2, version=version)


def encrypt(value: Any, secret: bytes, *, iv: bytes | None = None) -> dict[str, Any]:
    """Encrypt one value as format 3 (AES-256-GCM), exactly as Chef's Version3Encryptor."""
    iv = iv or os.urandom(12)
    plain = json.dumps({"json_wrapper": value}, separators=(",", ":")).encode()
    sealed = AESGCM(hashlib.sha256(secret).digest()).encrypt(iv, plain, b"")
    return {
        "encrypted_data": b64encode(sealed[:-16]),
        "iv": b64encode(iv),
        "auth_tag": b64encode(sealed[-16:]),
        "version": 3,
        "cipher": GCM,
    }


def is_encrypted(value: Any) -> bool:
    """Whether a value has the shape of an encrypted value (any readable format)."""
    try:
        _check_shape(value)
    except NotEncrypted:
        return False
    except EncryptedValueError:
        return True
    return True


def opens(value: Any, secret: bytes) -> bool:
    """Whether ``secret`` opens ``value`` (decrypts and, for formats 2 and 3, authenticates)."""
    try:
        decrypt(value, secret)
    except EncryptedValueError:
        return False
    return True


def is_current(value: Any, secret: bytes) -> bool:
    """Whether ``value`` is already written as :data:`WRITE_VERSION` under ``secret``."""
    return format_version(value) == WRITE_VERSION and opens(value, secret)


def explain(error: EncryptedValueError, secret: bytes, item: dict[str, Any], key: str,
            others: Callable[[], Iterable[tuple[str, dict[str, Any]]]] = lambda: ()) -> str:
    """One line naming why ``item[key]`` does not open, with other values as witnesses.

    A :class:`SecretMismatch` is blamed on the value when the same secret opens
    another value of the same item (all values of an item are written together),
    and on the secret when it opens none of them. For a single-value item the
    ``others`` items (``(name, item)`` pairs, e.g. a few other items of the bag)
    are consulted. Other errors are explained by themselves.
    """
    if not isinstance(error, SecretMismatch):
        return str(error)
    siblings = [(k, v) for k, v in item.items() if k not in ("id", key) and is_encrypted(v)]
    for other_key, other_value in siblings:
        if opens(other_value, secret):
            return (f"the value was altered after it was written: {error}, though the same secret "
                    f"opens '{other_key}' of this item")
    if siblings:
        return (f"wrong encrypted data bag secret: it opens none of the {len(siblings) + 1} values "
                f"of this item ({error})")
    checked = 0
    for name, other in _values_of(others()):
        checked += 1
        if opens(other, secret):
            return (f"the value was altered or written under another secret: {error}, though this "
                    f"secret opens item '{name}' of the same data bag")
    if checked:
        return (f"wrong encrypted data bag secret: it opens none of {checked} other values of "
                f"this data bag either ({error})")
    return f"wrong encrypted data bag secret, or the value was altered: {error} (no other value to tell which)"


def _values_of(items: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[tuple[str, Any]]:
    """The first encrypted value of each item."""
    for name, other in items:
        for k, v in other.items():
            if k != "id" and is_encrypted(v):
                yield name, v
                break
