"""Hostile request header sets, and the checks on what tracestitch writes into outgoing headers.

:func:`hostile_set` draws one set of ``(name, value)`` byte pairs from a ``random.Random``: the
property tests pass hypothesis' ``st.randoms()`` (so failures shrink), ``bench/fuzz_headers.py``
a seeded one (so 100,000 sets are cheap and reproducible). A set is mostly *plausible*: a valid
parent (``langsmith-trace`` or ``traceparent``) comes with most of them, since ``baggage`` and
``tracestate`` are only read under a parent, and the hostile part is a mutation of a valid
value (digits that are not ASCII, a lone surrogate in JSON, a byte that is not UTF-8 ...) rather
than noise that any parser rejects at once.

The checks are independent of tracestitch's own parsers, written from the specifications:
RFC 9110 field values, W3C trace context and baggage, LangSmith's dotted order.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

__all__ = [
    "TRACE_HEADERS",
    "format_problem",
    "hostile_set",
    "http_client_refuses",
]

TRACE_HEADERS = ("langsmith-trace", "baggage", "traceparent", "tracestate")

# Decimal digits of other scripts: str.isdigit() and re's \d take them, int() reads them.
_DIGIT_SETS = tuple(
    "".join(chr(zero + i) for i in range(10))
    for zero in (
        0x0660,  # Arabic-Indic
        0x06F0,  # Extended Arabic-Indic
        0xFF10,  # fullwidth
        0x0966,  # Devanagari
        0x09E6,  # Bengali
        0x1D7CE,  # mathematical bold, outside the BMP
    )
)
_ODD_CHARS = (
    "\x00",
    "\t",
    "\x0b",
    "\x1b",
    "\x7f",
    "\x85",
    "\xa0",
    "é",
    "ÿ",
    "中",
    "\U0001d7d8",  # mathematical double-struck zero
    "\u2028",
    "\u200b",
    "\ufeff",
    "\ufffd",
    "💥",
    '"',
    "\\",
    ",",
    ";",
    "=",
    " ",
    "%",
    "+",
)
_ODD_BYTES = (b"\xff", b"\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xc0\xaf", b"\x00", b"\x1b")
_FIELD_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))  # RFC 9110 field-value
_LONE_SURROGATES = ("\\ud800", "\\udfff", "\\udc00", "\\ud83d", "\\uDBFF")
_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_RECORDED = ("user-agent", "accept", "content-type", "x-request-id", "content-length")
_SECRET = ("authorization", "cookie", "x-api-key")
_START = datetime(2020, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------------------- valid values


def _uuid(rng: random.Random) -> str:
    version = rng.choice((4, 7))
    value = rng.getrandbits(128) & ~(0xF << 76) & ~(0x3 << 62) | version << 76 | 0b10 << 62
    return str(uuid.UUID(int=value))


def _timestamp(rng: random.Random) -> str:
    when = _START + timedelta(microseconds=rng.randrange(5 * 365 * 86_400 * 10**6))
    return when.strftime("%Y%m%dT%H%M%S%fZ")


def _dotted_order(rng: random.Random) -> str:
    depth = rng.choice((1, 1, 2, 2, 3, 5))
    return ".".join(_timestamp(rng) + _uuid(rng) for _ in range(depth))


def _traceparent(rng: random.Random) -> str:
    return f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-{rng.choice(('00', '01'))}"


def _tracestate(rng: random.Random) -> str:
    members = []
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice(("vendor", "congo", "rojo", "ot", "tenant@sys", "a-b_c*d/e"))
        value = rng.choice(("t61rcWkgMzE", "00f067aa0ba902b7", "p:8;r:3", "x y", "1"))
        members.append(f"{key}={value}")
    return rng.choice((",", ", ", " ,\t")).join(members)


def _scalar(rng: random.Random) -> object:
    return rng.choice(
        (
            "acme",
            "",
            1,
            -0.5,
            True,
            None,
            "中文",
            "emoji 💥",
            2**70,
            "line\nbreak",
            "nul\x00",
        )
    )


def _metadata_json(rng: random.Random) -> str:
    """JSON text of a metadata object, sometimes with what JSON allows but text cannot hold."""
    data = {f"k{i}": _scalar(rng) for i in range(rng.randrange(0, 4))}
    text = json.dumps(data, ensure_ascii=rng.random() < 0.7)
    roll = rng.random()
    if roll < 0.25:  # a lone surrogate escape: valid JSON, not valid Unicode text
        text = text[:-1] + (", " if data else "") + f'"s": "a{rng.choice(_LONE_SURROGATES)}b"}}'
    elif roll < 0.3:  # the same in a key
        text = '{"' + rng.choice(_LONE_SURROGATES) + '": 1}'
    elif roll < 0.35:
        text = "[" * rng.randrange(20, 400) + "]" * 3  # deep, and unbalanced at times
    elif roll < 0.4:
        depth = rng.randrange(20, 300)
        text = '{"a":' * depth + "1" + "}" * depth
    elif roll < 0.45:
        text = rng.choice(("[1,2]", '"str"', "1e400", "NaN", '{"a": 1e999}', "{}", "null"))
    return text


# ----------------------------------------------------------------------------------- hostile


def _mutate(rng: random.Random, text: str) -> str:
    """One plausible corruption of a valid header value."""
    if not text:
        return rng.choice(_ODD_CHARS)
    kind = rng.randrange(9)
    if kind == 0:  # ASCII digits replaced by digits of another script (same values)
        digits = rng.choice(_DIGIT_SETS)
        chars = list(text)
        places = [i for i, c in enumerate(chars) if "0" <= c <= "9"]
        for i in rng.sample(places, min(len(places), rng.randrange(1, 4))) if places else ():
            chars[i] = digits[int(chars[i])]
        return "".join(chars)
    if kind == 1:  # one character replaced
        i = rng.randrange(len(text))
        return text[:i] + rng.choice(_ODD_CHARS) + text[i + 1 :]
    if kind == 2:  # one character inserted
        i = rng.randrange(len(text) + 1)
        return text[:i] + rng.choice(_ODD_CHARS) + text[i:]
    if kind == 3:
        return text.upper()
    if kind == 4:
        return text[: rng.randrange(len(text))]
    if kind == 5:
        return text + rng.choice((".", "..", "." + text, ",", ";", " ", "\t"))
    if kind == 6:
        return rng.choice((" ", "\t", "")) + text + rng.choice((" ", "\t", ""))
    if kind == 7:  # hex digits as letters from elsewhere (fullwidth A-F, Cyrillic a/e)
        lookalike = rng.choice(("\uff21", "\u0430", "\uff41"))
        return text.replace("a", lookalike).replace("e", "\u0435")
    return text.replace("-", rng.choice(("\u2010", "\u2212", "_", "")))  # hyphen, minus sign


def _baggage(rng: random.Random) -> str:
    members = []
    for _ in range(rng.randrange(1, 5)):
        roll = rng.randrange(8)
        if roll <= 1:
            text = _metadata_json(rng)
            value = quote(text) if rng.random() < 0.8 else text
            members.append(f"langsmith-metadata={value}")
        elif roll == 2:
            tags = [rng.choice(("beta", "中", "a b", "x\x00y", "\u2028", "t" * 300)) for _ in "ab"]
            members.append(f"langsmith-tags={quote(','.join(tags))}")
        elif roll == 3:
            project = rng.choice(("shop", "p\nq", "中文", "%ff%fe", "%ed%a0%80", "x" * 400))
            members.append(f"langsmith-project={quote(project, safe='%')}")
        elif roll == 4:
            name = rng.choice(("ok", "bad\\nname", "\\u2028", "中", "a\\ud800", "x" * 300))
            replicas = f'[{{"project_name": "{name}", "updates": {{"tags": ["t"]}}}}]'
            members.append(f"langsmith-replicas={quote(replicas)}")
        elif roll == 5:
            members.append(f"userid={rng.choice(('alice', 'b%C3%B6b', '中', '%ZZ'))};p=1")
        elif roll == 6:
            members.append("langsmith-metadata=%7B%22a%22%3A%22%5Cud800%22%7D")
        else:
            members.append(_mutate(rng, f"langsmith-tags={quote('beta,gamma')}"))
    return rng.choice((",", ", ", " , ")).join(members)


def _encode(rng: random.Random, text: str) -> bytes:
    """Text as a client might put it on the wire: UTF-8 mostly, latin-1 where it can, and now
    and then with a byte that is not UTF-8 at all."""
    roll = rng.random()
    if roll < 0.1:
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            pass
    data = text.encode("utf-8", "surrogatepass")
    if roll > 0.9 and data:
        i = rng.randrange(len(data) + 1)
        data = data[:i] + rng.choice(_ODD_BYTES) + data[i:]
    return data


def _value(rng: random.Random, name: str) -> bytes:
    if name == "langsmith-trace":
        text = _dotted_order(rng)
    elif name == "traceparent":
        text = _traceparent(rng)
    elif name == "tracestate":
        text = _tracestate(rng)
        if rng.random() < 0.3:
            text = rng.choice(("中=1", "k=é", "K=v", "k=v=w", "k=" + "v" * 300, "a=1,a=2"))
        elif rng.random() < 0.2:
            text = ",".join(f"k{i}=v" for i in range(rng.randrange(30, 40)))
    elif name == "baggage":
        return _encode(rng, _baggage(rng))
    else:
        text = rng.choice(("Mozilla/5.0", "curl/8.0", "*/*", "text/plain", "42", "req-1"))
        roll = rng.random()
        if roll < 0.15:  # any bytes at all
            return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
        if roll < 0.4:  # what a server lets through: visible ASCII and obs-text, seldom UTF-8
            return bytes(rng.choice(_FIELD_BYTES) for _ in range(rng.randrange(0, 40)))
    if rng.random() < 0.6:
        text = _mutate(rng, text)
    return _encode(rng, text)


def hostile_set(rng: random.Random) -> list[tuple[bytes, bytes]]:
    """One set of request headers, as ``(lower-case name, raw value)`` byte pairs."""
    pairs: list[tuple[bytes, bytes]] = []
    roll = rng.random()
    if roll < 0.45:
        pairs.append((b"langsmith-trace", _dotted_order(rng).encode()))
    elif roll < 0.65:
        pairs.append((b"traceparent", _traceparent(rng).encode()))
    for _ in range(rng.randrange(1, 6)):
        pick = rng.random()
        if pick < 0.55:
            name = rng.choice(TRACE_HEADERS)
        elif pick < 0.85:
            name = rng.choice(_RECORDED)
        elif pick < 0.93:
            name = rng.choice(_SECRET)
        else:
            name = "".join(rng.choice(_TOKEN) for _ in range(rng.randrange(1, 12))).lower()
        pairs.append((name.encode("ascii"), _value(rng, name)))
    if rng.random() < 0.1 and pairs:  # a repeated header, same or different value
        name, value = rng.choice(pairs)
        pairs.append((name, value if rng.random() < 0.5 else _value(rng, name.decode())))
    rng.shuffle(pairs)
    return pairs


# ------------------------------------------------------------------------- outgoing checks


def http_client_refuses(value: str | bytes) -> bool:
    """Whether ``http.client`` (under ``requests``) refuses to send ``value`` as a header: not
    latin-1, or a CR/LF that is not folding (the checks of ``HTTPConnection.putheader``)."""
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            return True
    return http.client._is_illegal_header_value(value) is not None  # type: ignore[attr-defined]


_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_TS = (
    r"[0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])T(?:[01][0-9]|2[0-3])[0-5][0-9]"
    r"[0-5][0-9][0-9]{6}Z"
)
_HEX = "[0-9a-fA-F]"
_SEGMENT = f"{_TS}{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
_DOTTED = re.compile(f"{_SEGMENT}(?:\\.{_SEGMENT})*")
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TS_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_TS_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TS_MEMBER = re.compile(f"{_TS_KEY}={_TS_VALUE}")
_BAGGAGE_MEMBER = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+[ \t]*=[ \t]*[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
    r"(?:[ \t]*;[^,]*)?"
)


def format_problem(name: str, value: str | bytes) -> str | None:
    """What is wrong with a trace header tracestitch wrote, or ``None``: it must be printable
    ASCII (stricter than RFC 9110's field-value, which also allows obs-text) and well formed
    per its own specification."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if _PRINTABLE.fullmatch(text) is None:
        return f"{name}: not printable ASCII: {text[:80]!r}"
    if text != text.strip(" \t"):
        return f"{name}: leading or trailing whitespace"
    name = name.lower()
    if name == "langsmith-trace" and _DOTTED.fullmatch(text) is None:
        return f"langsmith-trace: not a dotted order: {text[:80]!r}"
    if name == "traceparent" and _TRACEPARENT.fullmatch(text) is None:
        return f"traceparent: malformed: {text!r}"
    if name == "tracestate":
        members = [m.strip(" \t") for m in text.split(",")]
        members = [m for m in members if m]
        if len(members) > 32 or any(_TS_MEMBER.fullmatch(m) is None for m in members):
            return f"tracestate: not a W3C list: {text[:80]!r}"
        keys = [m.partition("=")[0] for m in members]
        if len(set(keys)) != len(keys):
            return f"tracestate: duplicate keys: {text[:80]!r}"
    if name == "baggage":
        members = [m.strip(" \t") for m in text.split(",")]
        if any(_BAGGAGE_MEMBER.fullmatch(m) is None for m in members if m):
            return f"baggage: not a W3C baggage list: {text[:80]!r}"
    return None
