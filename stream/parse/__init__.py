"""Parser registry: one module per input format, each registering itself here.

Contract of a parser (a plain callable, no state):

    parse(record: bytes, *, operator: str, **context) -> list[Binding]

Context keywords a parser may use (and must otherwise accept and ignore): ``identity``
(RADIUS identity attribute), ``dhcp_identity`` (client_id|hwaddr|duid|circuit_id|remote_id),
``tz`` (IANA zone for zone abbreviations and zone-less syslog times), ``year`` (year of
year-less syslog timestamps) and ``ref_ms`` (receive time, e.g. the ``ipanon-received-ms``
header, from which a missing year is inferred).  See ``_time`` for the exact rules.

``record`` is exactly one record of the format — the bytes of one Kafka message on a raw topic,
or one record produced by the format's framer from a file.  A parser returns zero or more
bindings (a RADIUS record with a Framed-IP-Address and a Delegated-IPv6-Prefix yields two) or
raises ``stream.errors.Rejected`` with a machine-readable reason.  It never raises anything
else: property tests feed random bytes to every parser to hold it to that.

A *framer* splits a file's byte stream into records: ``frame(lines: Iterable[bytes]) ->
Iterator[bytes]``.  Line-oriented formats use ``frame_lines``.  Formats whose records depend on
context (Kea CSV rows need their header) make the framer emit self-contained records, so a
record on Kafka always parses on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..errors import Rejected
from ..model import Binding, loads_json

Parser = Callable[..., list]
Framer = Callable[[Iterable[bytes]], Iterator[bytes]]


def frame_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    """One record per non-blank line (trailing CR/LF stripped)."""
    for line in lines:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


def load_json_object(record: bytes, max_bytes: int) -> dict:
    """One JSON object per record, for every JSON format: ``oversized`` past ``max_bytes``,
    ``bad-json`` for invalid UTF-8/JSON, nesting too deep for the decoder, or a non-object."""
    if len(record) > max_bytes:
        raise Rejected("oversized", f"record larger than {max_bytes} bytes")
    obj = loads_json(record, "record is not valid UTF-8 JSON", "JSON nested too deeply")
    if type(obj) is not dict:
        raise Rejected("bad-json", "record is not a JSON object")
    return obj


@dataclass(frozen=True)
class Format:
    name: str
    parse: Parser
    frame: Framer = frame_lines
    #: which raw topic family the format feeds: radius | dhcp | nat
    family: str = "radius"
    description: str = ""
    #: leading lines of a file every record depends on (Kea CSV: the header).  A follower that
    #: resumes mid-file feeds these to the framer again before the resumed lines.
    header_lines: int = 0


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> Format:
    _load_builtin()
    try:
        return FORMATS[name]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise Rejected("unknown-format", f"unknown format {name!r}; known: {known}") from None


def parse_record(fmt: str, record: bytes, *, operator: str, **context: object) -> list[Binding]:
    return get_format(fmt).parse(record, operator=operator, **context)


def detect(record: bytes) -> str:
    """The concrete format of one record (what ``auto`` does per record); ``Rejected``
    (``unrecognised-format``) when no format claims it."""
    _load_builtin()
    from .auto import detect as _detect

    return _detect(record)


_loaded = False


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):  # every module in this package registers itself
        importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def formats() -> dict[str, Format]:
    _load_builtin()
    return dict(FORMATS)
