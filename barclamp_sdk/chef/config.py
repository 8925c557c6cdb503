"""Where the Chef client finds its server, name and key.

Each setting is taken from the first place that has it:

1. explicit arguments (``ChefConfig.load(server_url=...)``, CLI options);
2. the environment: ``CHEF_SERVER_URL``, ``CHEF_CLIENT_NAME``,
   ``CHEF_CLIENT_KEY``, ``CHEF_SSL_CA_FILE``, ``CHEF_SSL_VERIFY``,
   ``CHEF_ENCRYPTED_DATA_BAG_SECRET``;
3. a profile of ``~/.chef/credentials`` (TOML, as Chef Workstation writes it;
   ``CHEF_PROFILE`` or ``~/.chef/context`` selects, else ``default``);
4. the common keys of ``~/.chef/config.rb`` or ``~/.chef/knife.rb``.

``ChefConfig.sources`` says where each setting came from, for messages.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from barclamp_sdk.errors import ConfigurationError

log = logging.getLogger(__name__)

ENV_VARS = {
    "server_url": "CHEF_SERVER_URL",
    "client_name": "CHEF_CLIENT_NAME",
    "client_key": "CHEF_CLIENT_KEY",
    "ca_file": "CHEF_SSL_CA_FILE",
    "ssl_verify": "CHEF_SSL_VERIFY",
    "encrypted_data_bag_secret": "CHEF_ENCRYPTED_DATA_BAG_SECRET",
}

# knife.rb / config.rb key -> our setting
_KNIFE_KEYS = {
    "chef_server_url": "server_url",
    "node_name": "client_name",
    "client_key": "client_key",
    "encrypted_data_bag_secret": "encrypted_data_bag_secret",
    "ssl_ca_file": "ca_file",
    "ssl_verify_mode": "ssl_verify",
}

# credentials profile key -> our setting
_PROFILE_KEYS = {
    "chef_server_url": "server_url",
    "client_name": "client_name",
    "node_name": "client_name",
    "client_key": "client_key",
    "encrypted_data_bag_secret": "encrypted_data_bag_secret",
    "ssl_ca_file": "ca_file",
    "ssl_verify_mode": "ssl_verify",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard the client tries before giving up.

    Connection errors, 429, 502, 503 and 504 are retried with exponential
    backoff and jitter (``Retry-After`` is honoured), up to ``attempts``
    tries and never longer than ``total_timeout`` seconds in all.
    """

    attempts: int = 8
    total_timeout: float = 30.0
    backoff_initial: float = 0.1
    backoff_max: float = 4.0


@dataclass(frozen=True)
class ChefConfig:
    """Everything the transport needs to talk to one Chef server."""

    server_url: str
    client_name: str
    client_key_path: str | None = None
    client_key_pem: str | None = field(default=None, repr=False)
    sign_version: str = "1.3"
    server_api_version: int = 1
    verify: bool | str = True
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 16
    #: Rows per search page (0: 1,000, or 10,000 on goiardi).
    search_rows: int = 0
    #: The server's search window (``start + rows`` it accepts; OpenSearch's
    #: max_result_window). Searches stay inside it by partitioning; a smaller
    #: window is learned when the server refuses a page.
    search_window: int = 10_000
    #: Largest request body the server accepts (erchef's max_request_size;
    #: goiardi -j); bigger bodies are refused before sending.
    max_request_size: int = 1_000_000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    encrypted_data_bag_secret: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.server_url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            valid = False
        if not valid or any(c.isspace() or ord(c) < 32 for c in self.server_url):
            raise ConfigurationError(
                f"Chef server URL {self.server_url!r} ({self.source_of('server_url')}) "
                "must look like https://chef.example.com or "
                "https://chef.example.com/organizations/ORG"
            )
        if not self.client_name:
            raise ConfigurationError("Chef client name is empty; set CHEF_CLIENT_NAME")
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", self.client_name):
            # It travels in an HTTP header (X-Ops-UserId): printable ASCII only.
            raise ConfigurationError(
                f"Chef client name {self.client_name!r} ({self.source_of('client_name')}) is invalid; "
                "use letters, digits, '.', '-', '_' and '@'")
        if not (self.client_key_path or self.client_key_pem):
            raise ConfigurationError(
                f"no key for Chef client {self.client_name!r}; set CHEF_CLIENT_KEY "
                "to the path of its PEM file"
            )

    def source_of(self, name: str) -> str:
        """Where a setting came from (for error messages)."""
        return self.sources.get(name, "argument")

    def with_options(self, **changes: Any) -> ChefConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)

    def read_client_key(self) -> str:
        """The client's private key as PEM text, refusing unsafe key files."""
        if self.client_key_pem:
            return self.client_key_pem
        assert self.client_key_path is not None
        path = Path(self.client_key_path)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise ConfigurationError(
                f"client key {path} ({self.source_of('client_key')}) does not exist"
            ) from None
        check_private_file(path, mode, what="client key")
        return read_config_text(path, "client key")

    @classmethod
    def load(
        cls,
        *,
        server_url: str | None = None,
        client_name: str | None = None,
        client_key: str | None = None,
        profile: str | None = None,
        config_dir: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        ssl_verify: bool | None = None,
        ca_file: str | None = None,
        encrypted_data_bag_secret: str | None = None,
        **options: Any,
    ) -> ChefConfig:
        """Resolve the configuration; explicit arguments win.

        ``options`` are passed through (``sign_version``, ``read_timeout``,
        ``retry`` ...). ``environ`` and ``config_dir`` default to the process
        environment and ``~/.chef``.
        """
        env = os.environ if environ is None else environ
        chef_dir = Path(config_dir) if config_dir else Path.home() / ".chef"
        explicit = {
            "server_url": server_url,
            "client_name": client_name,
            "client_key": client_key,
            "ca_file": ca_file,
            "ssl_verify": ssl_verify,
            "encrypted_data_bag_secret": encrypted_data_bag_secret,
        }
        layers: list[tuple[str, dict[str, Any]]] = [
            ("argument", {k: v for k, v in explicit.items() if v is not None}),
            ("environment", _from_environment(env)),
            *_from_credentials(chef_dir, profile or env.get("CHEF_PROFILE")),
            *_from_knife(chef_dir),
        ]
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for source, layer in layers:
            for key, value in layer.items():
                if key not in values and value not in (None, ""):
                    values[key] = value
                    sources[key] = source
        missing = [k for k in ("server_url", "client_name", "client_key") if k not in values]
        if missing:
            names = ", ".join(ENV_VARS[k] for k in missing)
            raise ConfigurationError(
                f"no Chef server configured: set {names}, write a profile in "
                f"{chef_dir / 'credentials'}, or run `eval $(crowbar local start --dir DIR)`"
            )
        def base(setting: str) -> Path:
            # Relative paths: from the working directory for options and the
            # environment, from the config file's directory for config files.
            return Path.cwd() if sources.get(setting) in ("argument", "environment") else chef_dir

        key = str(values["client_key"])
        key_pem = key if key.lstrip().startswith("-----BEGIN") else None
        key_path = None if key_pem else str(_resolve_path(key, base("client_key")))
        verify: bool | str = True
        if "ca_file" in values:
            verify = str(_resolve_path(str(values["ca_file"]), base("ca_file")))
        if "ssl_verify" in values and not _truthy(values["ssl_verify"]):
            verify = False
        secret = values.get("encrypted_data_bag_secret")
        return cls(
            server_url=str(values["server_url"]).rstrip("/"),
            client_name=str(values["client_name"]),
            client_key_path=key_path,
            client_key_pem=key_pem,
            verify=verify,
            encrypted_data_bag_secret=(str(_resolve_path(secret, base("encrypted_data_bag_secret")))
                                       if secret else None),
            sources=sources,
            **options,
        )


def read_config_text(path: Path, what: str) -> str:
    """A configuration file's text; unreadable or non-UTF-8 files are one clear error naming them."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"the {what} {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                                 f"offset {exc.start})") from None


def check_private_file(path: Path, mode: int, *, what: str) -> None:
    """Refuse a secret file that other users can read or write."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(
            f"{what} {path} can be read by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower().lstrip(":")
    return text not in ("0", "false", "no", "off", "verify_none", "none")


def _resolve_path(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    return {key: env[var] for key, var in ENV_VARS.items() if env.get(var)}


def _from_credentials(chef_dir: Path, profile: str | None) -> list[tuple[str, dict[str, Any]]]:
    path = chef_dir / "credentials"
    explicit = profile is not None
    if profile is None:
        context = chef_dir / "context"
        profile = read_config_text(context, "Chef context file").strip() if context.is_file() else "default"
    if not path.is_file():
        if explicit:
            raise ConfigurationError(f"profile {profile!r} requested but {path} does not exist")
        return []
    try:
        data = tomllib.loads(read_config_text(path, "credentials file"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    section = data.get(profile)
    if not isinstance(section, dict):
        if explicit:
            known = ", ".join(sorted(k for k, v in data.items() if isinstance(v, dict))) or "none"
            raise ConfigurationError(
                f"profile {profile!r} not found in {path} (profiles: {known})"
            )
        return []
    values = {ours: section[theirs] for theirs, ours in _PROFILE_KEYS.items() if theirs in section}
    if str(values.get("client_key", "")).lstrip().startswith("-----BEGIN"):
        # An inline key makes the file as secret as a key file.
        check_private_file(path, path.stat().st_mode,
                           what=f"credentials file (profile {profile!r} holds an inline client key)")
    return [(f"{path} [{profile}]", values)]


# -- knife.rb / config.rb: the common, declarative subset of the Ruby DSL --

_ASSIGN = re.compile(r"^\s*(\w+)\s*=\s*(.+?)\s*$")
_SETTING = re.compile(r"^\s*(\w+)\s*(?:\(\s*(.+?)\s*\)|\s+(.+?))\s*$")


def _from_knife(chef_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    for name in ("config.rb", "knife.rb"):
        path = chef_dir / name
        if path.is_file():
            return [(str(path), _parse_knife(path))]
    return []


def _parse_knife(path: Path) -> dict[str, Any]:
    variables: dict[str, Any] = {"current_dir": str(path.parent), "__dir__": str(path.parent)}
    values: dict[str, Any] = {}
    for lineno, raw in enumerate(read_config_text(path, "knife configuration").splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip():
            continue
        assign = _ASSIGN.match(line)
        if assign and assign.group(1) not in _KNIFE_KEYS:
            try:
                variables[assign.group(1)] = _RubyExpr(assign.group(2), variables, path).value()
            except ValueError:
                pass  # a variable we do not need
            continue
        setting = _SETTING.match(line)
        if not setting or setting.group(1) not in _KNIFE_KEYS:
            continue
        expr = setting.group(2) or setting.group(3)
        try:
            values[_KNIFE_KEYS[setting.group(1)]] = _RubyExpr(expr, variables, path).value()
        except ValueError:
            raise ConfigurationError(
                f"{path}:{lineno}: cannot read the value of {setting.group(1)} ({expr.strip()}); "
                f"use a plain string there or set {ENV_VARS[_KNIFE_KEYS[setting.group(1)]]}"
            ) from None
    return values


def _strip_comment(line: str) -> str:
    quote = ""
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and not (index + 1 < len(line) and line[index + 1] == "{"):
            return line[:index]
    return line


class _RubyExpr:
    """Evaluates string literals, interpolation, ENV, File.join/expand_path."""

    _TOKEN = re.compile(
        r"""\s*(?:(?P<dq>"(?:[^"\\]|\\.)*")|(?P<sq>'(?:[^'\\]|\\.)*')|(?P<sym>:\w+)"""
        r"""|(?P<call>File\.(?:join|expand_path|dirname))|(?P<env>ENV\[)"""
        r"""|(?P<name>[A-Za-z_]\w*)|(?P<punct>[(),\]]))"""
    )

    def __init__(self, text: str, variables: dict[str, Any], path: Path) -> None:
        self.text = text.strip()
        self.pos = 0
        self.variables = variables
        self.path = path

    def value(self) -> Any:
        result = self._expr()
        if self.text[self.pos :].strip():
            raise ValueError(self.text)
        return result

    def _next(self) -> tuple[str, str]:
        match = self._TOKEN.match(self.text, self.pos)
        if not match:
            raise ValueError(self.text)
        self.pos = match.end()
        kind = match.lastgroup or ""
        return kind, match.group(kind)

    def _expect(self, punct: str) -> None:
        kind, token = self._next()
        if token != punct:
            raise ValueError(self.text)

    def _expr(self) -> Any:
        kind, token = self._next()
        if kind == "dq":
            return self._interpolate(token[1:-1])
        if kind == "sq":
            return token[1:-1].replace("\\'", "'")
        if kind == "sym":
            return token[1:]
        if kind == "env":
            name = self._expr()
            self._expect("]")
            value = os.environ.get(str(name))
            if value is None:
                raise ValueError(self.text)
            return value
        if kind == "call":
            self._expect("(")
            args = [self._expr()]
            while True:
                _, punct = self._next()
                if punct == ")":
                    break
                if punct != ",":
                    raise ValueError(self.text)
                args.append(self._expr())
            if token == "File.join":
                return os.path.join(*map(str, args))
            if token == "File.dirname":
                return os.path.dirname(str(args[0]))
            base = str(args[1]) if len(args) > 1 else os.getcwd()
            return os.path.abspath(os.path.join(base, os.path.expanduser(str(args[0]))))
        if kind == "name":
            if token in ("true", "false"):
                return token == "true"
            if token == "__FILE__":
                return str(self.path)
            if token in self.variables:
                return self.variables[token]
        raise ValueError(self.text)

    def _interpolate(self, body: str) -> str:
        def replace_one(match: re.Match[str]) -> str:
            return str(_RubyExpr(match.group(1), self.variables, self.path).value())

        text = re.sub(r"#\{([^}]*)\}", replace_one, body)
        return text.replace('\\"', '"').replace("\\\\", "\\")
