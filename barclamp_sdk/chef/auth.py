"""Chef request signing (the ``X-Ops-*`` headers), as a ``requests`` auth.

Protocol 1.3 (SHA-256, RSASSA-PKCS1-v1_5, signs ``X-Ops-Server-API-Version``)
is the default. 1.0 and 1.1 (SHA-1, raw RSA "private encrypt" of the canonical
string, no DigestInfo) are there for old servers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from barclamp_sdk.errors import ConfigurationError

SIGN_VERSIONS = ("1.0", "1.1", "1.3")

_MULTI_SLASH = re.compile(r"/+")


def load_private_key(pem: str | bytes, *, source: str = "key") -> rsa.RSAPrivateKey:
    """Load an RSA private key (PKCS#1 or PKCS#8 PEM)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = _parse_pem(data)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{source} is not an unencrypted RSA private key in PEM format ({exc})"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{source} is not an RSA key; Chef keys are RSA")
    return key


@functools.lru_cache(maxsize=16)
def _parse_pem(data: bytes) -> object:
    """Parsing an RSA key takes ~50 ms: clients made from one key (say, one per CLI call
    in a test process) parse it once."""
    return serialization.load_pem_private_key(data, password=None)


def canonical_path(path: str) -> str:
    """Chef's canonical path: no duplicate slashes, no trailing slash."""
    path = _MULTI_SLASH.sub("/", path) or "/"
    if len(path) > 1:
        path = path.rstrip("/")
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ChefSigner(requests.auth.AuthBase):
    """Signs each request as ``client_name`` with its RSA private key.

    >>> session.auth = ChefSigner("admin", key, version="1.3")
    """

    def __init__(
        self,
        client_name: str,
        private_key: rsa.RSAPrivateKey,
        *,
        version: str = "1.3",
        server_api_version: int = 1,
    ) -> None:
        if version not in SIGN_VERSIONS:
            raise ConfigurationError(
                f"unknown signing protocol {version!r}; use one of {', '.join(SIGN_VERSIONS)}"
            )
        self.client_name = client_name
        self.version = version
        self.server_api_version = str(server_api_version)
        self._key = private_key
        if version == "1.1":
            self._user_id = _b64(hashlib.sha1(client_name.encode()).digest())
        else:
            self._user_id = client_name
        if version in ("1.0", "1.1"):
            numbers = private_key.private_numbers()
            self._crt = (
                numbers.p,
                numbers.q,
                numbers.dmp1,
                numbers.dmq1,
                numbers.iqmp,
                private_key.key_size // 8 + (1 if private_key.key_size % 8 else 0),
            )

    @classmethod
    def from_file(cls, client_name: str, key_path: str | Path, **kwargs: object) -> ChefSigner:
        """Build a signer from a PEM key file."""
        path = Path(key_path)
        return cls(client_name, load_private_key(path.read_bytes(), source=str(path)), **kwargs)  # type: ignore[arg-type]

    def headers_for(self, method: str, path: str, body: bytes) -> dict[str, str]:
        """The authentication headers for one request."""
        path = canonical_path(path)
        timestamp = _timestamp()
        if self.version == "1.3":
            content_hash = _b64(hashlib.sha256(body).digest())
            canonical = (
                f"Method:{method}\nPath:{path}\nX-Ops-Content-Hash:{content_hash}\n"
                f"X-Ops-Sign:version=1.3\nX-Ops-Timestamp:{timestamp}\n"
                f"X-Ops-UserId:{self._user_id}\n"
                f"X-Ops-Server-API-Version:{self.server_api_version}"
            )
            signature = self._key.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
            algorithm = "sha256"
        else:
            content_hash = _b64(hashlib.sha1(body).digest())
            hashed_path = _b64(hashlib.sha1(path.encode()).digest())
            canonical = (
                f"Method:{method}\nHashed Path:{hashed_path}\n"
                f"X-Ops-Content-Hash:{content_hash}\nX-Ops-Timestamp:{timestamp}\n"
                f"X-Ops-UserId:{self._user_id}"
            )
            signature = self._private_encrypt(canonical.encode())
            algorithm = "sha1"
        headers = {
            "X-Ops-Sign": f"algorithm={algorithm};version={self.version}",
            "X-Ops-Userid": self.client_name,
            "X-Ops-Timestamp": timestamp,
            "X-Ops-Content-Hash": content_hash,
            "X-Ops-Server-API-Version": self.server_api_version,
        }
        encoded = _b64(signature)
        for index in range(0, len(encoded), 60):
            headers[f"X-Ops-Authorization-{index // 60 + 1}"] = encoded[index : index + 60]
        return headers

    def _private_encrypt(self, message: bytes) -> bytes:
        """RSA PKCS#1 v1.5 type-1 padding without DigestInfo (Chef 1.0/1.1)."""
        p, q, dmp1, dmq1, iqmp, size = self._crt
        if len(message) > size - 11:
            raise ConfigurationError(
                "client name too long to sign with protocol 1.0; use protocol 1.3"
            )
        padded = b"\x00\x01" + b"\xff" * (size - len(message) - 3) + b"\x00" + message
        m = int.from_bytes(padded, "big")
        # Chinese remainder theorem: four times faster than pow(m, d, n).
        m1 = pow(m, dmp1, p)
        m2 = pow(m, dmq1, q)
        h = (iqmp * (m1 - m2)) % p
        return (m2 + h * q).to_bytes(size, "big")

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        path = urlsplit(request.url or "").path
        request.headers.update(self.headers_for(request.method or "GET", path, body))
        return request
