"""Secrets in Chef encrypted data bag items (format version 3).

Each value is stored as Chef does it: ``{"json_wrapper": value}`` as JSON,
encrypted with AES-256-GCM under SHA-256 of the shared secret (the bytes of
the ``encrypted_data_bag_secret`` file, stripped as Chef strips them), with a
random 12-byte IV (formats 0, 1 and 2 are read too, see
:mod:`barclamp_sdk.chef.encrypted_data_bag`)::

    {"id": "eqlx-default",
     "san_password": {"encrypted_data": "...", "iv": "...", "auth_tag": "...",
                      "version": 3, "cipher": "aes-256-gcm"}}

so a recipe reads it with ``data_bag_item(ref["data_bag"], ref["item"],
secret)[ref["key"]]``. Proposals and roles hold only that reference:
``{"data_bag": "crowbar_secrets", "item": "eqlx-default--1f0c...", "key": "san_password"}``.

A proposal's secrets change atomically with its document: new values go into
a new version, a fresh item ``<barclamp>-<proposal>--<version id>`` nothing
refers to yet (:meth:`SecretStore.stage`); the document write switches the
references; versions no longer referred to (by the document or the config
role that applies it) are collected after (:meth:`SecretStore.collect`). A
refused, failed or losing command discards its version, so every secret stays
as it was; one killed before that leaves a version nothing refers to, which
the next write of that proposal collects. History revisions keep no version
alive: reverting to a revision whose version was collected (its value was
replaced and committed since) is refused by ``Proposals.revert``, naming the
settings, unless told to keep their current values.

In an attribute model, mark a field secret with the :data:`Secret` type; the
library stores what is set there and keeps only the reference.
"""

from __future__ import annotations

import secrets as random_source
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from barclamp_sdk.chef import encrypted_data_bag as edb
from barclamp_sdk.chef.client import ChefClient
from barclamp_sdk.chef.config import check_private_file
from barclamp_sdk.errors import ConfigurationError, CrowbarError, NotFound, ValidationError
from barclamp_sdk.model.locks import LockManager
from barclamp_sdk.model.naming import SECRETS_BAG

CIPHER = "aes-256-gcm"
#: Between a proposal's secrets item id and a version id.
VERSION_SEPARATOR = "--"
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


def referenced_items(data: Any, bag: str = SECRETS_BAG) -> set[str]:
    """Items of ``bag`` that secret references anywhere in a JSON value point at."""
    found: set[str] = set()
    if is_reference(data):
        if data.get("data_bag") == bag:
            found.add(str(data.get("item")))
    elif isinstance(data, dict):
        for value in data.values():
            found |= referenced_items(value, bag)
    elif isinstance(data, list):
        for value in data:
            found |= referenced_items(value, bag)
    return found


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
    secret = edb.parse_secret(file.read_bytes(), f"encrypted data bag secret {file}")  # bytes
    if not secret:
        raise ConfigurationError(f"encrypted data bag secret {file} is empty")
    return secret


def encrypt_value(value: Any, secret: bytes) -> dict[str, Any]:
    """Encrypt one value as Chef's encrypted data bag format version 3."""
    return edb.encrypt(value, secret)


def decrypt_value(encrypted: Any, secret: bytes) -> Any:
    """Decrypt one value of format 0 to 3; an ``edb.EncryptedValueError`` names the cause."""
    return edb.decrypt(encrypted, secret)


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

    def stage(self, base: str, values: dict[str, Any]) -> dict[str, SecretRef]:
        """Store ``values`` as a new version of ``base``'s secrets; returns their references.

        The version is a fresh item nothing refers to yet, so nothing changes
        for readers until a document switches to these references. Discard it
        if that write fails (:meth:`discard`); collect the old ones after it
        succeeded (:meth:`collect`).
        """
        secret = self._require()
        item = f"{base}{VERSION_SEPARATOR}{uuid.uuid4().hex[:16]}"
        body: dict[str, Any] = {"id": item, **{key: encrypt_value(v, secret) for key, v in values.items()}}
        try:
            self.chef.data_bags.create_item(self.bag, body)
        except NotFound:
            self.chef.data_bags.ensure(self.bag)
            self.chef.data_bags.create_item(self.bag, body)
        return {key: self.ref(item, key) for key in values}

    def discard(self, items: Iterable[str]) -> None:
        """Delete staged versions a failed write never referred to (best effort, never raises)."""
        for item in items:
            try:
                self.delete(item)
            except CrowbarError:
                pass  # left unreferenced: the next write of that proposal collects it

    def versions(self, base: str) -> list[str]:
        """Every item holding ``base``'s secrets (the unversioned one of older releases too)."""
        return sorted(i for i in self.items() if i == base or i.startswith(base + VERSION_SEPARATOR))

    def collect(self, base: str, keep: Iterable[str]) -> list[str]:
        """Delete ``base``'s versions not in ``keep`` (still referred to); returns those deleted."""
        keep = set(keep)
        deleted = []
        for item in self.versions(base):
            if item in keep:
                continue
            with self.locks.hold(f"secrets-{item}", f"collect the old secrets version {item}"):
                self.delete(item)
            deleted.append(item)
        return deleted

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
        except edb.EncryptedValueError as exc:
            why = edb.explain(exc, secret, item, ref.key, lambda: self._neighbours(ref.data_bag, ref.item))
            raise CrowbarError(f"secret {ref} cannot be read: {why}") from None

    def _neighbours(self, bag: str, item_id: str, limit: int = 5) -> Iterator[tuple[str, dict[str, Any]]]:
        """A few other items of a bag, witnesses for :func:`edb.explain`."""
        for other in [i for i in self.chef.data_bags.items(bag) if i != item_id][:limit]:
            yield other, self.chef.data_bags.get_item(bag, other)

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

        Values of every format (0 to 3) are rewritten as format 3; values
        already in format 3 under the new secret are skipped, so running it
        again after an interruption finishes the job without losing any item.
        Afterwards the store uses the new secret.
        """
        old = self._require()
        new = edb.strip_secret(new_secret)
        if not new:
            raise ValidationError("the new secret is empty")
        done = skipped = 0
        for item_id in self.items():
            with self.locks.hold(f"secrets-{item_id}", "rotate the encrypted data bag secret"):
                item = self.chef.data_bags.get_item(self.bag, item_id)
                before, changed = dict(item), False
                for key, value in list(item.items()):
                    if key == "id" or not edb.is_encrypted(value) or edb.is_current(value, new):
                        continue  # not a secret, or already rotated (format 3 under the new secret)
                    try:
                        plain = decrypt_value(value, old)
                    except edb.EncryptedValueError as exc:
                        if not edb.opens(value, new):
                            raise CrowbarError(
                                f"{self.bag}/{item_id}:{key} cannot be rotated: it opens with neither the "
                                f"old nor the new secret ({edb.explain(exc, old, before, key)}); "
                                "nothing more was changed"
                            ) from None
                        plain = decrypt_value(value, new)  # an older format, already under the new secret
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
