"""Where the command line (or a script) finds the server, the token and the TLS files.

Each setting is taken from the first place that has it:

1. a command-line flag (``--server``, ``--token``, ``--token-file``, ``--ca``, ``--cert``, ``--key``,
   ``--timeout``);
2. an environment variable (``DSOMARKET_SERVER``, ``DSOMARKET_TOKEN``, ``DSOMARKET_TOKEN_FILE``,
   ``DSOMARKET_CA``, ``DSOMARKET_CERT``, ``DSOMARKET_KEY``, ``DSOMARKET_TIMEOUT``);
3. the config file's profile table ``[profiles.NAME]`` (``--profile`` or ``DSOMARKET_PROFILE``), then its
   top-level keys of the same names (``server``, ``token``, ``token_file``, ``ca``, ``cert``, ``key``,
   ``timeout``);
4. the default (``127.0.0.1:50051``, no token, plaintext, 60 s).

The config file is ``--config PATH``, else ``$DSOMARKET_CONFIG``, else
``$XDG_CONFIG_HOME/dsomarket/config.toml`` (``~/.config/dsomarket/config.toml``);
a missing default file is no error, a missing named one is. Relative paths in the
file are relative to the file's folder. A token given directly wins over a token
file at the same level. Example::

    server = "dso.example.net:50051"
    ca = "ca.pem"

    [profiles.dso]
    token_file = "dso.token"

    [profiles.sunrise]
    token = "dsm_..."
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from dsomarket.engine.errors import InputError

if TYPE_CHECKING:   # imported where a client is made: `dsomarket config show` and offline commands need no gRPC
    from dsomarket.clients.api import Client, ClientTls

DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 60.0
KEYS = ("server", "token", "token_file", "ca", "cert", "key", "timeout")
_PATHS = ("token_file", "ca", "cert", "key")


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/dsomarket/config.toml``, XDG's default being ``~/.config``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dsomarket" / "config.toml"


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings; ``sources`` says where each came from (flag, env, file, default)."""

    server: str = DEFAULT_SERVER
    token: str = ""
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    config_path: Path | None = None
    profile: str = ""
    sources: dict[str, str] = field(default_factory=dict)

    def tls(self) -> ClientTls | None:
        """TLS when a CA is set; a client certificate needs its key and the CA."""
        if bool(self.cert) != bool(self.key):
            raise InputError("connection", "key", "--cert and --key go together")
        if self.cert and not self.ca:
            raise InputError("connection", "ca", "mutual TLS needs the server's CA (--ca) too")
        for name in ("ca", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise InputError("connection", name, f"{path}: no such file")
        from dsomarket.clients.api import ClientTls

        return ClientTls(self.ca, self.cert, self.key) if self.ca else None

    def client(self) -> Client:
        """A :class:`Client` with these settings (call inside the event loop that uses it)."""
        if not self.token:
            raise InputError("connection", "token", "give --token, --token-file, DSOMARKET_TOKEN or a config "
                                                    "file's token (see `dsomarket config show`)")
        from dsomarket.clients.api import Client

        return Client(self.server, self.token, tls=self.tls(), timeout=self.timeout)


def _read_file(path: Path, required: bool) -> dict[str, Any]:
    if not path.is_file():
        if required:
            raise InputError("config", "path", f"{path}: no such file")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError("config", "path", f"{path}: not TOML: {exc}") from None


def _layer(table: Mapping[str, Any], where: str, base: Path | None) -> dict[str, Any]:
    """The known keys of one table; unknown keys are an error (a typo must not silently fall back)."""
    out = {}
    for k, v in table.items():
        if k == "profiles" and where == "file":
            continue
        if k not in KEYS:
            raise InputError("config", k, f"unknown key (known: {', '.join(KEYS)})")
        if k == "timeout":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise InputError("config", k, "must be a positive number of seconds")
            v = float(v)
        elif not isinstance(v, str):
            raise InputError("config", k, "must be a string")
        if k in _PATHS and base is not None:
            v = str(base / Path(v).expanduser())
        out[k] = v
    return out


def resolve(flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ,
            config: str | Path | None = None, profile: str | None = None) -> Settings:
    """Settings from flags, then the environment, then the config file, then the defaults.

    Parameters
    ----------
    flags
        Values given on the command line (None or missing = not given), keyed as :data:`KEYS`.
    environ
        The environment (``DSOMARKET_*``).
    config
        The config file's path; default ``$DSOMARKET_CONFIG`` or :func:`default_config_path`.
    profile
        A ``[profiles.NAME]`` table of the config file; default ``$DSOMARKET_PROFILE``.
    """
    flags = {k: v for k, v in (flags or {}).items() if k in KEYS and v not in (None, "")}
    env = {k: environ[f"DSOMARKET_{k.upper()}"] for k in KEYS if environ.get(f"DSOMARKET_{k.upper()}")}
    if "timeout" in env:
        try:
            env["timeout"] = float(env["timeout"])
        except ValueError:
            raise InputError("environment", "DSOMARKET_TIMEOUT", "is not a number") from None
    named = config or environ.get("DSOMARKET_CONFIG")
    path = Path(named).expanduser() if named else default_config_path(environ)
    data = _read_file(path, required=bool(named))
    profile = profile or environ.get("DSOMARKET_PROFILE", "")
    profiles = data.get("profiles", {})
    if profile and profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise InputError("config", "profile", f"no [profiles.{profile}] in {path} (profiles: {known})")
    levels = [("flag", flags), ("env", env),
              (f"{path} [profiles.{profile}]", _layer(profiles.get(profile, {}), "profile", path.parent)),
              (str(path), _layer(data, "file", path.parent))]
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for where, values in levels:
        for k, v in sorted(values.items(), key=lambda kv: KEYS.index(kv[0])):
            # A token and a token file are one setting: the first level that has either decides.
            if k in ("token", "token_file") and "token" in sources:
                continue
            if k not in chosen:
                chosen[k] = v
                sources["token" if k == "token_file" else k] = where
    if "token" not in chosen and "token_file" in chosen:
        token_path = Path(chosen["token_file"])
        if not token_path.is_file():
            raise InputError("connection", "token_file", f"{token_path}: no such file")
        chosen["token"] = token_path.read_text().strip()
    return Settings(server=chosen.get("server", DEFAULT_SERVER), token=chosen.get("token", ""),
                    ca=Path(chosen["ca"]) if "ca" in chosen else None,
                    cert=Path(chosen["cert"]) if "cert" in chosen else None,
                    key=Path(chosen["key"]) if "key" in chosen else None,
                    timeout=float(chosen.get("timeout", DEFAULT_TIMEOUT)), config_path=path, profile=profile,
                    sources=sources)
