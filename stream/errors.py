"""One root for every error ipanon raises on purpose.

A check raises; it never returns a bool.  Every rejection of input carries a machine-readable
``reason`` (short kebab-case code, stable across releases: dashboards and the dead-letter topic
key on it) and a human ``detail`` that never contains key material.
"""

from __future__ import annotations


class IpanonError(Exception):
    """Root of every ipanon error."""


class Rejected(IpanonError):
    """An input record that cannot become a binding.

    ``reason`` is machine-readable (e.g. ``bad-json``, ``missing-attribute``, ``bad-address``);
    ``detail`` says what was wrong for a human.  Neither may contain secrets.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ConfigError(IpanonError):
    """Configuration that cannot be used; the message names the file and field to fix."""


class CryptoError(IpanonError):
    """Every cryptographic failure collapses into this one error (like Fernet's InvalidToken)."""
