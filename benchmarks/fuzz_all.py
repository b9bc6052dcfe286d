"""Hostile-input fuzzer: ≥ 1M generated inputs against every decoder of untrusted bytes.

Targets — everything that turns bytes an attacker can write to a topic into objects:

- every registered parser (``stream.parse.formats()``, ``auto`` included), with random parse
  context (year, reference time, zone, identity attribute);
- ``binding_wire.decode`` (the bindings topic; plus a round trip of what it accepts) and
  ``Binding.from_json`` (its previous form), ``ConsentRecord.decode`` (consent topic),
  ``HoldSet.from_json`` (legal holds);
- the lawful-request decoder: ``QueryDesk.submit`` and ``QueryDesk.approve`` on garbage *and*
  on structurally mutated bodies that carry a valid signature of the demo authority/staff keys
  (so the checks behind the signature see hostile values too), and ``request_from_body``.

Contract checked per input: the call returns (parsers: a list of ``Binding`` whose JSON form
round-trips through ``Binding.from_dict``; the desk: a ``Decision`` whose refusal reason is a
kebab-case code) or raises ``stream.errors.Rejected`` whose ``reason`` is kebab-case.  Anything
else is a *crash*: counted per target and exception type, and the first few inputs are written to
``--crash-dir`` (base64) for reproduction.

Inputs are produced by a seeded mutation engine (reproducible with ``--seed``): seeds from the
parser property tests and the repository's sample files (``tests/data``), mutated by byte flips, inserts, deletes,
truncation, splicing, invalid UTF-8, NUL bytes, odd address notations (IPv4-mapped IPv6, zone
ids, leading zeros, hex/short IPv4, prefixes with host bits, full-width digits), far past/future
and non-numeric timestamps, JSON value-type swaps, deep nesting (up to 100 000 levels) and
oversized records (up to 4 MiB).

Prints ONE JSON line: inputs, crashes (total and by target/exception), outcomes per target
(accepted / rejected), the rejection reasons seen, the slowest single call per target, and the
wall time.  Timing figures are noisy: the machine is shared (2 cores, several busy agents).

    python benchmarks/fuzz_all.py                # 1 000 000 inputs
    python benchmarks/fuzz_all.py --smoke        # 3 000 inputs (the test suite's run)
    python benchmarks/fuzz_all.py -n 200000 --seed 7 --crash-dir /tmp/crashes
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import sys
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import agents  # noqa: F401,E402  (first: serves the compiled core when it matches the sources)
from stream.errors import Rejected  # noqa: E402
from stream.model import Binding  # noqa: E402
from stream.parse import formats  # noqa: E402

REASON_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
#: sample files of real software and vendor documentation, in the repository (tests/data/README):
#: file → its format, None = let auto-detection tell the vendor of each line
SAMPLES = {REPO / "tests" / "data" / "freeradius" / "sample-detail": "radius-detail",
           REPO / "tests" / "data" / "samples" / "kea-legal.txt": "kea-legal",
           REPO / "tests" / "data" / "samples" / "nat-syslog.txt": None}

#: Odd spellings substituted for address-looking tokens (documented rules: docs/robustness.md).
ODD_ADDRESSES = [
    "::ffff:192.0.2.1", "::ffff:c000:201", "64:ff9b::192.0.2.1", "fe80::1%eth0", "192.0.2.1%0",
    "010.001.002.003", "192.0.2.01", "0x7f.0.0.1", "0177.0.0.1", "127.1", "3221225985", "1.2.3",
    "1.2.3.4.5", "256.1.1.1", "-1.2.3.4", " 192.0.2.1 ", "[2001:db8::1]", "2001:0db8:0000:0000::0001",
    "2001:db8::1/64", "192.0.2.1/33", "192.0.2.0/24", "0.0.0.0", "255.255.255.255", "::", "::1",
    "\uff11\uff19\uff12.0.2.1", "192\u3002168\u30021\u30021", "2001:db8::g", "2001:db8:::1", ":::",
    "1:2:3:4:5:6:7:8:9", "::ffff:1.2.3.4/128", "", "%", "/", "0/0", "::/0", "a" * 300,
]
FAR_TIMES = [
    "0", "-1", "1", "-62135596800", "253402300800", "99999999999999999999999", "18446744073709551616",
    "1e30", "NaN", "Infinity", "-0", "0x10", "1718000000.5", "1718000000123456", "9" * 400,
    "Jan 01 0001 00:00:00 UTC", "Dec 31 9999 23:59:60 CEST", "Feb 30 2024 25:61:61 XYZ",
    "1970-01-01 00:00:00", "2999-12-31 23:59:59", "0000-00-00 00:00:00",
]
JSON_VALUES: list[Any] = [None, True, False, 0, -1, 2**63, -(2**64), 10**40, 1e308, 0.5,
                          "", "\x00", "\ud800", "x" * 5000, [], {}, [1, [2, [3]]], {"a": {"b": None}},
                          "::ffff:192.0.2.1", "fe80::1%eth0", "010.1.2.3", "NaN"]
BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
            b"\x00", b"\xe2\x82", b"\x80"]
IP_TOKEN = re.compile(rb"(?:\d{1,3}\.){3}\d{1,3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?:/\d+)?")
DIGITS = re.compile(rb"\d{4,}")


# -- seeds --------------------------------------------------------------------------------------

def _parser_seeds() -> dict[str, list[bytes]]:
    from tests.unit.parse.test_properties import SEEDS  # one corpus for property tests and fuzzer

    seeds: dict[str, list[bytes]] = {k: [v] for k, v in SEEDS.items()}
    for p, fmt in SAMPLES.items():
        data = p.read_bytes()  # part of the repository: a missing one is a broken checkout, not "no seeds"
        if fmt == "radius-detail":
            recs = [r.strip(b"\n") for r in data.split(b"\n\n") if r.strip()]
        else:
            recs = [line for line in data.splitlines() if line.strip()]
        for r in recs[:50]:
            if fmt:
                seeds.setdefault(fmt, []).append(r)
            else:  # NAT syslog sample: let auto-detection tell which vendor each line is
                seeds.setdefault("auto", []).append(r)
    seeds.setdefault("auto", []).extend(v for k, v in SEEDS.items())
    return seeds


class AccessFixture:
    """The demo registry and signing keys, to make validly signed hostile requests."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from stream.access import Policy, QueryDesk, Registry

        self.registry = Registry.load(REPO / "config" / "authorities", REPO / "config" / "staff")
        keys = REPO / "config" / "keys" / "demo"
        self.auth_key = load_pem_private_key((keys / "se-police-demo.sign.pem").read_bytes(), None)
        self.staff_key = load_pem_private_key((keys / "alice-demo.sign.pem").read_bytes(), None)
        self.QueryDesk, self.Policy = QueryDesk, Policy
        self.desk = QueryDesk(self.registry)
        self.now_ms = 1_780_000_000_000

    def body(self, rng: random.Random) -> dict:
        from stream.access import request_body

        return request_body(authority="se-police-demo", request_number=f"R-{rng.randrange(10**9)}",
                            basis="lek-law-enforcement", case_ref="case-1", address="100.64.12.34",
                            port=None, from_ms=self.now_ms - 3_600_000, to_ms=self.now_ms - 3_000_000,
                            issued_ms=self.now_ms - 1000, nonce=f"{rng.getrandbits(128):032x}")

    def signed_request(self, body: dict) -> bytes:
        from stream.access import sign_request

        return sign_request(self.auth_key, body)

    def signed_approval(self, rng: random.Random) -> bytes:
        from stream.access import sign_approval

        return sign_approval(self.staff_key, request_id=f"se-police-demo/R-{rng.randrange(100)}",
                             request_digest=f"{rng.getrandbits(256):064x}", staff="alice-demo",
                             issued_ms=self.now_ms - rng.randrange(10**7))


# -- mutation engine ----------------------------------------------------------------------------

def _mutate_json_value(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    if isinstance(obj, dict) and obj:
        obj = dict(obj)
        k = rng.choice(list(obj))
        r = rng.random()
        if r < 0.15:
            del obj[k]
        elif r < 0.25:
            obj[rng.choice(["extra", k.upper(), "", "\x00", k + " "])] = rng.choice(JSON_VALUES)
        elif r < 0.45 and isinstance(obj[k], str) and rng.random() < 0.5:
            obj[k] = rng.choice(ODD_ADDRESSES + FAR_TIMES)
        elif r < 0.55 and isinstance(obj[k], (int, float)) and not isinstance(obj[k], bool):
            obj[k] = rng.choice([0, -1, 2**31, 2**63, 2**64, -(2**63), 10**30, 1e300, 1.5,
                                 obj[k] * 1000, -obj[k]])
        elif r < 0.75 and depth < 3:
            obj[k] = _mutate_json_value(rng, obj[k], depth + 1)
        else:
            obj[k] = rng.choice(JSON_VALUES)
        return obj
    if isinstance(obj, list) and obj:
        obj = list(obj)
        i = rng.randrange(len(obj))
        obj[i] = _mutate_json_value(rng, obj[i], depth + 1) if depth < 3 else rng.choice(JSON_VALUES)
        return obj
    return rng.choice(JSON_VALUES)


def _deep(rng: random.Random) -> bytes:
    n = rng.choice([50, 999, 1001, 5000, 100_000])
    kind = rng.randrange(3)
    if kind == 0:
        return b"[" * n + b"]" * n
    if kind == 1:
        return b'{"a":' * n + b"1" + b"}" * n
    return b"[" * n  # unterminated


def mutate(rng: random.Random, seed: bytes, other: bytes) -> bytes:
    """One hostile variant of ``seed`` (``other``: a second seed for splicing)."""
    r = rng.random()
    data = bytearray(seed)
    if r < 0.12:  # byte flips
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
    elif r < 0.20:  # insert random bytes
        pos = rng.randint(0, len(data))
        data[pos:pos] = rng.randbytes(rng.randint(1, 32))
    elif r < 0.27:  # delete a range
        if data:
            a = rng.randrange(len(data))
            del data[a:a + rng.randint(1, 40)]
    elif r < 0.32:  # truncate
        data = data[:rng.randint(0, len(data))]
    elif r < 0.37:  # splice
        data = data[:rng.randint(0, len(data))] + bytearray(other[rng.randint(0, len(other)):])
    elif r < 0.45:  # invalid UTF-8 / NUL
        pos = rng.randint(0, len(data))
        data[pos:pos] = rng.choice(BAD_UTF8)
    elif r < 0.60:  # odd address notations
        toks = list(IP_TOKEN.finditer(bytes(data)))
        if toks:
            m = rng.choice(toks)
            data[m.start():m.end()] = rng.choice(ODD_ADDRESSES).encode("utf-8")
    elif r < 0.70:  # far past / future / non-numeric timestamps
        toks = list(DIGITS.finditer(bytes(data)))
        if toks:
            m = rng.choice(toks)
            data[m.start():m.end()] = rng.choice(FAR_TIMES).encode()
    elif r < 0.82:  # JSON-aware value mutation
        try:
            obj = json.loads(bytes(data))
            data = bytearray(json.dumps(_mutate_json_value(rng, obj)).encode("utf-8", "surrogatepass"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            data[rng.randrange(len(data) or 1):] = b""
    elif r < 0.86:  # deep nesting
        data = bytearray(_deep(rng))
    elif r < 0.87:  # oversized: a long field, up to 4 MiB
        size = rng.choice([70_000, 1 << 20, 4 << 20]) if rng.random() < 0.02 else rng.choice([9000, 17_000, 70_000])
        pos = rng.randint(0, len(data))
        data[pos:pos] = rng.choice([b"A", b"9", b"\t", b" ", b"\xff"]) * size
    elif r < 0.92:  # random bytes
        data = bytearray(rng.randbytes(rng.randint(0, 200)))
    elif r < 0.94:  # line structure: CR/LF/tabs
        pos = rng.randint(0, len(data))
        data[pos:pos] = rng.choice([b"\n", b"\r\n", b"\r", b"\n\n", b"\t", b"\x0b", b"\x85"])
    # else: the seed unchanged (a valid record: keeps the accept path exercised)
    if rng.random() < 0.15:  # stack a second mutation
        return mutate(rng, bytes(data), other) if len(data) < 200_000 else bytes(data)
    return bytes(data)


# -- targets ------------------------------------------------------------------------------------

def _parser_target(fmt):
    ctxs = [{}, {"year": 2024}, {"ref_ms": 1_718_000_000_000, "tz": "Europe/Stockholm"},
            {"identity": "Calling-Station-Id"}, {"dhcp_identity": "hwaddr"}, {"ref_ms": 0, "year": 1},
            {"tz": "Not/AZone"}, {"ref_ms": 10**20}, {"ref_ms": 99_999_999_999_999}]
    # ref_ms comes from the ipanon-received-ms header (any digit string: agents/app.py Pipeline.parse_raw)

    def call(data: bytes, rng: random.Random) -> str:
        out = fmt.parse(data, operator="op", **rng.choice(ctxs))
        if not isinstance(out, list) or not all(isinstance(b, Binding) for b in out):
            raise TypeError("parser returned something other than a list of Binding")
        for b in out:
            d = b.to_dict()
            json.dumps(d)
            if Binding.from_dict(json.loads(json.dumps(d))) != b:
                raise AssertionError("binding does not round-trip through its JSON form")
        return "accepted"

    return call


def build_targets(access: AccessFixture) -> dict[str, tuple[Callable[[bytes, random.Random], str], list[bytes]]]:
    from stream.access import parse_request, request_from_body
    from stream.consent import ConsentRecord
    from stream.hold import HoldSet

    pseeds = _parser_seeds()
    targets: dict[str, tuple[Callable, list[bytes]]] = {}
    for name, fmt in sorted(formats().items()):
        targets[f"parse:{name}"] = (_parser_target(fmt), pseeds.get(name) or pseeds["auto"])

    from stream.model import parse_network

    rng = random.Random(0)

    binding = Binding(kind="radius", action="start", operator="op", ip=parse_network("100.64.0.1"),
                      subscriber="u", session="s", nas="192.0.2.1", at_ms=1_718_000_000_000).to_json()
    nat = Binding(kind="nat", action="start", operator="op", ip=parse_network("198.51.100.7"), subscriber=None,
                  session=None, nas=None, at_ms=1, inside_ip=parse_network("100.64.0.7").network_address,
                  port_first=1024, port_last=2047).to_json()

    def t_binding(data: bytes, rng: random.Random) -> str:
        b = Binding.from_json(data)
        if not isinstance(b, Binding):
            raise TypeError("from_json returned something other than a Binding")
        return "accepted"

    targets["binding-json"] = (t_binding, [binding, nat])

    from stream import binding_wire

    def t_binding_wire(data: bytes, rng: random.Random) -> str:
        b = binding_wire.decode(data)
        if not isinstance(b, Binding):
            raise TypeError("binding_wire.decode returned something other than a Binding")
        if binding_wire.decode(binding_wire.encode(b)) != b:
            raise ValueError("binding_wire round trip changed the binding")
        return "accepted"

    v6 = Binding(kind="radius", action="stop", operator="op", ip=parse_network("2001:db8:200:ab00::/56"),
                 subscriber="ü", session="s", nas=None, at_ms=-5, octets_in=1 << 40, vrf="7")
    targets["binding-wire"] = (t_binding_wire, [binding_wire.encode(Binding.from_json(binding)),
                                                binding_wire.encode(Binding.from_json(nat)), binding_wire.encode(v6)])

    def t_consent(data: bytes, rng: random.Random) -> str:
        key = rng.choice([b"op:abc", None, b"", b"\xff", data[:40]])
        ConsentRecord.decode(key, data if rng.random() < 0.95 else None)
        return "accepted"

    targets["consent-decode"] = (t_consent, [b'{"v":1,"operator":"op","state":"granted","purpose":"statistics",'
                                             b'"at_ms":1718000000000}'])

    def t_holds(data: bytes, rng: random.Random) -> str:
        HoldSet.from_json(data)
        return "accepted"

    targets["hold-set"] = (t_holds, [b'[{"id":"h1","operator":"op","ip":"100.64.0.0/24","from_ms":0,"to_ms":10,'
                                     b'"case_ref":"c","until_ms":100}]', b"[]"])

    def t_submit(data: bytes, rng: random.Random) -> str:
        if rng.random() < 0.35:  # a hostile body with a *valid* signature: exercises the checks behind it
            try:
                body = _mutate_json_value(rng, access.body(rng))
                data = access.signed_request(body if isinstance(body, dict) else {"x": body})
            except (TypeError, ValueError):  # unsignable (e.g. lone surrogate): fall back to garbage
                pass
        d = access.desk.submit(data, access.now_ms + rng.choice([0, 10**6, -10**9, 10**12]))
        if d.status == "refused":
            reason = d.reason
            if not isinstance(reason, str) or not REASON_RE.match(reason):
                raise AssertionError(f"refusal without a kebab-case reason: {reason!r}")
            return f"refused:{reason}"
        if len(access.desk.pending()) > 5000:
            access.desk = access.QueryDesk(access.registry)
        return d.status

    targets["access-submit"] = (t_submit, [access.signed_request(access.body(rng)) for _ in range(4)])

    def t_approve(data: bytes, rng: random.Random) -> str:
        if rng.random() < 0.2:
            data = access.signed_approval(rng)
        d = access.desk.approve(data, access.now_ms)
        reason = d.reason
        if d.status in ("refused", "approval-rejected") and isinstance(reason, str) and not REASON_RE.match(reason):
            raise AssertionError(f"bad reason {reason!r}")
        if d.status in ("refused", "approval-rejected"):
            if not isinstance(reason, str):
                raise AssertionError("refusal without a reason")
            return f"refused:{reason}"
        return d.status

    targets["access-approve"] = (t_approve, [access.signed_approval(rng) for _ in range(2)])

    def t_from_body(data: bytes, rng: random.Random) -> str:
        # request_from_body's contract: bodies that passed the desk's shape check (all ten v1
        # fields present).  Hostile *values* in every field; a missing field is out of contract.
        full = access.body(rng)
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = {}
        body = {k: v for k, v in (body if isinstance(body, dict) else {}).items() if k in full}
        body = {k: body.get(k, v) for k, v in full.items()}
        # the desk's gate (the wire is json.loads: NaN/Infinity arrive as floats, refused there)
        parse_request(json.dumps({"type": "request", "v": 1, "body": body, "sig": "00" * 64}).encode())
        request_from_body(body)
        return "accepted"

    targets["access-request-from-body"] = (t_from_body, [json.dumps(access.body(rng)).encode()])
    return targets


# -- driver -------------------------------------------------------------------------------------

def run(n: int, seed: int, crash_dir: Path | None, max_saved: int = 20) -> dict:
    rng = random.Random(seed)
    access = AccessFixture()
    targets = build_targets(access)
    names = sorted(targets)
    all_seeds = [s for _, seeds in targets.values() for s in seeds]
    calls: Counter = Counter()
    accepted: Counter = Counter()
    rejected: Counter = Counter()
    reasons: dict[str, Counter] = defaultdict(Counter)
    crashes: Counter = Counter()
    slowest: dict[str, float] = {}
    saved = 0
    where: dict[str, str] = {}
    bytes_in = 0
    t0 = time.perf_counter()
    for i in range(n):
        name = names[i % len(names)]
        fn, seeds = targets[name]
        base = rng.choice(seeds) if rng.random() < 0.85 else rng.choice(all_seeds)
        data = mutate(rng, base, rng.choice(all_seeds))
        bytes_in += len(data)
        calls[name] += 1
        c0 = time.perf_counter()
        try:
            outcome = fn(data, rng)
            if outcome.startswith("refused:"):
                rejected[name] += 1
                reasons[name][outcome.split(":", 1)[1]] += 1
            else:
                accepted[name] += 1
        except Rejected as e:
            if not isinstance(e.reason, str) or not REASON_RE.match(e.reason):
                crashes[f"{name}:bad-reason"] += 1
            else:
                rejected[name] += 1
                reasons[name][e.reason] += 1
        except BaseException as e:  # noqa: BLE001 — a crash is anything that is not Rejected
            if isinstance(e, KeyboardInterrupt):
                raise
            kind = f"{name}:{type(e).__name__}"
            crashes[kind] += 1
            tb = traceback.extract_tb(e.__traceback__)
            where.setdefault(kind, f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?")
            if crash_dir is not None and saved < max_saved and crashes[kind] == 1:  # first of each kind
                crash_dir.mkdir(parents=True, exist_ok=True)
                (crash_dir / f"crash-{saved:03d}.json").write_text(json.dumps(
                    {"target": name, "error": f"{type(e).__name__}: {str(e)[:200]}", "seed": seed, "index": i,
                     "traceback": traceback.format_tb(e.__traceback__)[-4:],
                     "input_b64": base64.b64encode(data[:100_000]).decode(), "input_len": len(data)}))
                saved += 1
        dt = time.perf_counter() - c0
        if dt > slowest.get(name, 0.0):
            slowest[name] = dt
    wall = time.perf_counter() - t0
    from benchmarks._harness import machine

    return {
        "bench": "fuzz_all", "inputs": n, "seed": seed, "targets": len(names), "bytes_in": bytes_in,
        "crashes": sum(crashes.values()), "crashes_by": dict(sorted(crashes.items())),
        "crash_sites": dict(sorted(where.items())),
        "calls": dict(sorted(calls.items())), "accepted": dict(sorted(accepted.items())),
        "rejected": dict(sorted(rejected.items())),
        "reasons": {k: dict(v.most_common(12)) for k, v in sorted(reasons.items())},
        "slowest_call_ms": {k: round(v * 1000, 2) for k, v in sorted(slowest.items())},
        "wall_s": round(wall, 1), "inputs_per_s": int(n / wall) if wall else 0, "machine": machine(),
        "note": "shared 2-core machine: timings noisy",
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000, help="inputs to generate (default 1 000 000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="3 000 inputs (the suite's run)")
    ap.add_argument("--crash-dir", type=Path, help="write the first crashing inputs here")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    fig = run(3000 if args.smoke else args.n, args.seed, args.crash_dir)
    fig["smoke"] = args.smoke
    print(json.dumps(fig, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
