"""The parsers' address parser: ``stream.model.network`` — ``parse_network`` (same rules, same
rejections) with a bounded text → network cache and a fast path for dotted quads.  It lives in
``stream.model`` so ``Binding.from_json`` (the worker's hot path) shares it; this module keeps
the name the parsers and the benchmark use (``_CACHE`` is that cache, which the benchmark
empties to measure cold parsing).
"""

from __future__ import annotations

from ..model import _NET_CACHE as _CACHE
from ..model import address_text, ip_text, is_single, network

__all__ = ["network", "ip_text", "address_text", "is_single", "_CACHE"]
