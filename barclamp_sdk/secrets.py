"""Secrets in Chef encrypted data bag items (format version 3).

Each value is stored as Chef does it: ``{"json_wrapper": value}`` as JSON,
encrypted with AES-256-GCM under SHA-256 of the shared secret (the text of
the ``encrypted_data_bag_secret`` file, stripped), with a random 12-byte IV::

    {"id": "eqlx-default",
     "san_password": {"encrypted_data": "...", "iv": "...", "auth_tag": "...",
                      "version": 3, "cipher": "aes-256-gcm"}}

so a recipe reads it with ``data_bag_item("crowbar_secrets", "eqlx-default",
secret)["san_password"]``. Proposals and roles hold only a reference:
``{"data_bag": "crowbar_secrets", "item": "eqlx-default", "key": "san_password"}``.

In an attribute model, mark a field secret with the :data:`Secret` type; the
library stores what is set there and keeps only the reference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random_source
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict

from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import check_private_file, read_config_text
from barclamp_sdk.errors import ConfigurationError, CrowbarError, NotFound, ValidationError
from barclamp_sdk.locks import LockManager
from barclamp_sdk.naming import SECRETS_BAG

CIPHER = "aes-256-gcm"
#: How the CLI shows a secret to people; never stored as a value.
MASK = "********"


class SecretRef(BaseModel):
    """Where a secret lives: data bag, item, key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_bag: str = SECRETS_BAG
    item: str
    key: str

    def __str__(self) -> str:
        return f"{self.data_bag}/{self.item}:{self.key}"


class _SecretMarker:
    """Marks an attribute-model field as secret."""

    def __repr__(self) -> str:
        return "Secret"


SECRET = _SecretMarker()

#: A secret attribute: a reference once stored; a plain string when just set.
Secret = Annotated[SecretRef | str | None, SECRET]


def is_reference(value: Any) -> bool:
    """Whether a JSON value is a secret reference."""
    return isinstance(value, dict) and set(value) == {"data_bag", "item", "key"}


def secret_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every :data:`Secret` field of a model (nested too)."""
    paths = []
    for field_name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or field_name}"
        if any(m is SECRET for m in field.metadata):
            paths.append(path)
            continue
        annotation = field.annotation
        for candidate in (annotation, *get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths.extend(secret_paths(candidate, f"{path}."))
                break
        if get_origin(annotation) is Annotated and SECRET in get_args(annotation):
            paths.append(path)
    return paths


def load_secret(path: str | Path) -> bytes:
    """Read an ``encrypted_data_bag_secret`` file, refusing unsafe ones."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise ConfigurationError(f"encrypted data bag secret {file} does not exist") from None
    check_private_file(file, mode, what="encrypted data bag secret")
    text = read_config_text(file, "encrypted data bag secret").strip()
    if not text:
        raise ConfigurationError(f"encrypted data bag secret {file} is empty")
    return text.encode()


def _key(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _b64(data: bytes) -> str:
    """Base64 as Ruby's Base64.encode64 writes it (60-character lines)."""
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


def encrypt_value(value: Any, secret: bytes) -> dict[str, Any]:
    """Encrypt one value as Chef's encrypted data bag format version 3."""
    iv = os.urandom(12)
    plaintext = json.dumps({"json_wrapper": value}, separators=(",", ":")).encode()
    sealed = AESGCM(_key(secret)).encrypt(iv, plaintext, b"")
    return {
        "encrypted_data": _b64(sealed[:-16]),
        "iv": _b64(iv),
        "auth_tag": _b64(sealed[-16:]),
        "version": 3,
        "cipher": CIPHER,
    }


def decrypt_value(encrypted: dict[str, Any], secret: bytes) -> Any:
    """Decrypt one version-3 value; ValueError when the secret is wrong."""
    if encrypted.get("version") != 3 or encrypted.get("cipher") != CIPHER:
        raise ValueError(f"unsupported encrypted data bag format {encrypted.get('version')!r}")
    data = base64.b64decode(encrypted["encrypted_data"])
    tag = base64.b64decode(encrypted["auth_tag"])
    iv = base64.b64decode(encrypted["iv"])
    try:
        plaintext = AESGCM(_key(secret)).decrypt(iv, data + tag, b"")
    except InvalidTag:
        raise ValueError("the secret does not decrypt this value") from None
    return json.loads(plaintext)["json_wrapper"]


def generate_password(length: int = 24) -> str:
    """A random password of letters and digits."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    return "".join(random_source.choice(alphabet) for _ in range(length))


class SecretStore:
    """Encrypted secrets in the ``crowbar_secrets`` data bag."""

    def __init__(self, chef: ChefClient, locks: LockManager, secret: bytes | None, *,
                 bag: str = SECRETS_BAG, source: str = "") -> None:
        self.chef = chef
        self.locks = locks
        self.bag = bag
        self._secret = secret
        self._source = source

    @classmethod
    def from_file(cls, chef: ChefClient, locks: LockManager, path: str | Path | None) -> SecretStore:
        return cls(chef, locks, load_secret(path) if path else None, source=str(path or ""))

    @property
    def configured(self) -> bool:
        return self._secret is not None

    def _require(self) -> bytes:
        if self._secret is None:
            raise ConfigurationError(
                "no encrypted data bag secret configured: set CHEF_ENCRYPTED_DATA_BAG_SECRET "
                "to a file readable only by you (Chef's encrypted_data_bag_secret)"
            )
        return self._secret

    def ref(self, item: str, key: str) -> SecretRef:
        return SecretRef(data_bag=self.bag, item=item, key=key)

    def put(self, item: str, values: dict[str, Any]) -> dict[str, SecretRef]:
        """Store several secrets in one item; returns their references."""
        secret = self._require()
        with self.locks.hold(f"secrets-{item}", f"store secrets in {item}"):
            current = self.chef.data_bags.find_item(self.bag, item)
            body = dict(current or {"id": item})
            for key, value in values.items():
                body[key] = encrypt_value(value, secret)
            if current is None:
                self.chef.data_bags.ensure(self.bag)
                self.chef.data_bags.create_item(self.bag, body)
            else:
                self.chef.data_bags.update_item(self.bag, body)
        return {key: self.ref(item, key) for key in values}

    def get(self, ref: SecretRef | dict[str, Any]) -> Any:
        """The plain value a reference points at."""
        secret = self._require()
        if isinstance(ref, dict):
            ref = SecretRef.model_validate(ref)
        try:
            item = self.chef.data_bags.get_item(ref.data_bag, ref.item)
        except NotFound:
            raise CrowbarError(f"secret {ref} is missing: its data bag item does not exist") from None
        if ref.key not in item:
            raise CrowbarError(f"secret {ref} is missing from its item")
        try:
            return decrypt_value(item[ref.key], secret)
        except ValueError as exc:
            raise CrowbarError(f"secret {ref} cannot be read: {exc} (wrong encrypted data bag secret?)") from None

    def delete(self, item: str) -> None:
        try:
            self.chef.data_bags.delete_item(self.bag, item)
        except NotFound:
            pass

    def items(self) -> list[str]:
        try:
            return self.chef.data_bags.items(self.bag)
        except NotFound:
            return []

    def rotate(self, new_secret: bytes) -> dict[str, int]:
        """Re-encrypt every item under ``new_secret``; resumable.

        Items already readable with the new secret are skipped, so running it
        again after an interruption finishes the job without losing any item.
        Afterwards the store uses the new secret.
        """
        old = self._require()
        if not new_secret.strip():
            raise ValidationError("the new secret is empty")
        new = new_secret.strip()
        done = skipped = 0
        for item_id in self.items():
            with self.locks.hold(f"secrets-{item_id}", "rotate the encrypted data bag secret"):
                item = self.chef.data_bags.get_item(self.bag, item_id)
                changed = False
                for key, value in list(item.items()):
                    if key == "id" or not isinstance(value, dict):
                        continue
                    try:
                        decrypt_value(value, new)
                        continue  # already rotated
                    except ValueError:
                        pass
                    try:
                        plain = decrypt_value(value, old)
                    except ValueError:
                        raise CrowbarError(
                            f"{self.bag}/{item_id}:{key} opens with neither the old nor the new "
                            "secret; nothing more was changed"
                        ) from None
                    item[key] = encrypt_value(plain, new)
                    changed = True
                if changed:
                    self.chef.data_bags.update_item(self.bag, item)
                    done += 1
                else:
                    skipped += 1
        self._secret = new
        return {"rotated": done, "already_rotated": skipped}

    def values(self) -> Iterator[tuple[SecretRef, Any]]:
        """Every stored secret, decrypted (for audits and tests)."""
        for item_id in self.items():
            item = self.chef.data_bags.get_item(self.bag, item_id)
            for key in item:
                if key != "id":
                    ref = self.ref(item_id, key)
                    yield ref, self.get(ref)
