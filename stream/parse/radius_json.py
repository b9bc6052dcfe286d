"""``radius-json``: one flat JSON object per record, keyed by RADIUS attribute names.

This is what FreeRADIUS's ``linelog`` module writes with a JSON format string, and what most
RADIUS-to-Kafka shims emit.  Values may be strings (linelog) or numbers.  Nested objects,
arrays and non-scalar values are rejected: RADIUS attributes are flat.
"""

from __future__ import annotations

from ..errors import Rejected
from ..model import Binding
from . import Format, load_json_object, register
from ._radius import bindings_from_attributes

MAX_RECORD_BYTES = 64 * 1024


def parse(record: bytes, *, operator: str, identity: str = "User-Name", **_context: object) -> list[Binding]:
    attrs = load_json_object(record, MAX_RECORD_BYTES)
    if not _PLAIN.issuperset(map(type, attrs.values())):  # one pass in C; the rest only when needed
        attrs = _coerce(attrs)
    return bindings_from_attributes(attrs, operator=operator, identity=identity)


_PLAIN = frozenset({str, int})


def _coerce(obj: dict) -> dict[str, str | int]:
    """Integral floats (``300.0``) become ints; booleans, null, fractions, arrays, objects → reject."""
    attrs: dict[str, str | int] = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise Rejected("bad-attribute", "attribute values must be strings or integers")
        attrs[k] = v
    return attrs


register(Format("radius-json", parse, family="radius",
                description="flat JSON object of RADIUS attribute names (FreeRADIUS linelog)"))
