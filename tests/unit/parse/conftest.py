"""Fixtures for parser tests (helpers live in parsehelp.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parsehelp import samples  # noqa: E402,F401  (fixture)
