"""Start-up: settings + configuration on disk → the operators the worker serves.

Refuses to start half-configured: every operator profile must load and every operator must
have a key file (``agents.keystore``), else a ``ConfigError`` names the file to fix.
"""

from __future__ import annotations

from pathlib import Path

from stream.errors import ConfigError

from .app import OperatorRuntime
from .keystore import load_key
from .settings import Settings

DEFAULT_TTL_MS = 24 * 3600 * 1000


def operator_names(operators_dir: Path) -> list[str]:
    d = Path(operators_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: operator profile directory not found (set --operators or IPANON_OPERATORS)")
    names = sorted(p.stem for p in d.glob("*.toml"))
    if not names:
        raise ConfigError(f"{d}: no operator profiles (*.toml) found")
    return names


def keys_dir(settings: Settings) -> Path:
    return Path(settings.keys_dir) if settings.keys_dir else Path(settings.data_dir) / "keys"


def load_operators(settings: Settings) -> dict[str, OperatorRuntime]:
    out = {}
    kd = keys_dir(settings)
    for name in operator_names(settings.operators_dir):
        ttl = settings.ttl_ms_override if settings.ttl_ms_override is not None else DEFAULT_TTL_MS
        out[name] = OperatorRuntime(name=name, ttl_ms=ttl, stats_key=load_key(kd, name))
    return out
