"""Headers in each shape a Python web stack hands around, read and written the same way.

One :class:`Shape` per kind of carrier, each with a getter, a setter and a reader of several
headers at once, used by extraction (:func:`tracestitch.propagation.extract`), injection
(:func:`tracestitch.propagation.inject`) and the middleware's recording of request headers:

- :data:`PAIRS`: a list of ``(name, value)`` pairs, bytes or text (ASGI ``scope["headers"]``,
  Kafka's message headers: text names, bytes values, what an empty list is given);
- :data:`ENVIRON`: a WSGI environ (``HTTP_LANGSMITH_TRACE``, ``CONTENT_TYPE``);
- :data:`MULTIDICT`: a case-insensitive header object with several values a name (aiohttp's
  ``CIMultiDict``, httpx's and starlette's ``Headers``, werkzeug's ``Headers``);
- :data:`MAPPING`: a plain dict, or any other mapping (requests' headers), any key case.

Names are given in lower case. Values come back as the carrier holds them, ``str`` or
``bytes``, and are untrusted: what they are worth is for the reader to judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENVIRON",
    "MAPPING",
    "MULTIDICT",
    "PAIRS",
    "Collected",
    "Names",
    "Shape",
    "collect_pairs",
    "get_header",
    "set_header",
    "shape_of",
]

Found = dict[str, list[Any]]


class Collected(dict[str, list[Any]]):
    """Headers already read from their carrier, every value by lower-case name: what a
    middleware's one pass over a request's headers found, handed to
    :func:`tracestitch.propagation.extract` so that it does not read the headers again."""

    __slots__ = ()


class Names:
    """Header names to read together, prepared once (lower case, as text and as bytes)."""

    __slots__ = ("by_key", "environ", "names")

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(dict.fromkeys(n.lower() for n in names))
        self.by_key: dict[str | bytes, str] = {}
        for name in self.names:
            self.by_key[name] = name
            self.by_key[name.encode("latin-1")] = name
        self.environ = tuple((name, _environ_key(name)) for name in self.names)


@dataclass(frozen=True, slots=True)
class Shape:
    """How to read and write the headers of one kind of carrier."""

    name: str
    #: Every value of header ``name`` (lower case); ``[]`` when absent.
    get: Callable[[Any, str], list[Any]]
    #: Set header ``name`` to ``value``, replacing every value it had (in any key case).
    set: Callable[[Any, str, str], None]
    #: ``{name: values}`` for those of ``names`` present (one pass where the shape allows).
    collect: Callable[[Any, Names], Found]


# -- pairs (ASGI) -------------------------------------------------------------------------------


def collect_pairs(pairs: Iterable[Any], names: Names) -> Found:
    """:data:`PAIRS`' reader, callable directly on the request path (an ASGI header list)."""
    by_key = names.by_key
    found: Found = {}
    for pair in pairs:
        key, value = pair
        name = by_key.get(key)
        if name is None:
            # ASGI servers send lower-case names; other lists may not.
            if not isinstance(key, (str, bytes)) or key.islower():
                continue
            name = by_key.get(key.lower())
            if name is None:
                continue
        values = found.get(name)
        if values is None:
            found[name] = [value]
        else:
            values.append(value)
    return found


def _pairs_get(pairs: Iterable[Any], name: str) -> list[Any]:
    return collect_pairs(pairs, Names((name,))).get(name, [])


def _pairs_set(pairs: list[Any], name: str, value: str) -> None:
    # Names and values each as the list's first pair has them: (bytes, bytes) in ASGI, (str, str)
    # in gRPC metadata. An empty list gets Kafka's (str, bytes): a producer's message headers
    # are the one pair list built from nothing, and kafka-python, aiokafka and confluent-kafka
    # all take that shape (kafka-python refuses any other).
    text_name = not pairs or isinstance(pairs[0][0], str)
    text_value = bool(pairs) and isinstance(pairs[0][1], str)
    keys = (name, name.encode("latin-1"))
    pairs[:] = [p for p in pairs if not isinstance(p[0], (str, bytes)) or p[0].lower() not in keys]
    pairs.append(
        (keys[0] if text_name else keys[1], value if text_value else value.encode("latin-1"))
    )


PAIRS = Shape("pairs", _pairs_get, _pairs_set, collect_pairs)

# -- WSGI environ -------------------------------------------------------------------------------

_CGI = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def _environ_key(name: str) -> str:
    return _CGI.get(name) or "HTTP_" + name.upper().replace("-", "_")


def _environ_get(environ: Mapping[str, Any], name: str) -> list[Any]:
    value = environ.get(_environ_key(name))
    return [] if value is None else [value]


def _environ_set(environ: Any, name: str, value: str) -> None:
    environ[_environ_key(name)] = value


def _environ_collect(environ: Mapping[str, Any], names: Names) -> Found:
    found: Found = {}
    for name, key in names.environ:
        value = environ.get(key)
        if value is not None:
            found[name] = [value]
    return found


ENVIRON = Shape("environ", _environ_get, _environ_set, _environ_collect)

# -- multi-dicts --------------------------------------------------------------------------------

_GETTERS = ("getall", "get_list", "getlist", "get_all")


def _multidict_collect(headers: Any, names: Names) -> Found:
    getter = next((g for g in (getattr(headers, m, None) for m in _GETTERS) if g is not None), None)
    found: Found = {}
    if getter is None:
        return found
    for name in names.names:
        try:
            values = getter(name)
        except KeyError:  # multidict's getall() without a default
            continue
        if values:
            found[name] = list(values)
    return found


def _multidict_get(headers: Any, name: str) -> list[Any]:
    return _multidict_collect(headers, Names((name,))).get(name, [])


def _item_set(headers: Any, name: str, value: str) -> None:
    headers[name] = value  # case-insensitive objects replace every value of the name


MULTIDICT = Shape("multidict", _multidict_get, _item_set, _multidict_collect)

# -- mappings -----------------------------------------------------------------------------------


def _mapping_collect(headers: Mapping[Any, Any], names: Names) -> Found:
    found: Found = {}
    for name in names.names:  # the common case: exact lower-case keys, no scan
        value = headers.get(name)
        if value is not None:
            found[name] = [value]
    if found or not headers:
        return found
    return collect_pairs(headers.items(), names)


def _mapping_get(headers: Mapping[Any, Any], name: str) -> list[Any]:
    return _mapping_collect(headers, Names((name,))).get(name, [])


def _mapping_set(headers: Any, name: str, value: str) -> None:
    if isinstance(headers, dict) and name not in headers:
        for key in headers:
            if isinstance(key, str) and key.lower() == name:
                headers[key] = value  # the name in another case: keep the caller's key
                return
    headers[name] = value


MAPPING = Shape("mapping", _mapping_get, _mapping_set, _mapping_collect)


def shape_of(headers: Any) -> Shape:
    """The shape of ``headers``, checked commonest first."""
    kind = type(headers)
    if kind is list:
        return PAIRS
    if kind is not dict and any(hasattr(headers, method) for method in _GETTERS):
        return MULTIDICT
    if isinstance(headers, Mapping):
        return ENVIRON if "wsgi.version" in headers or "REQUEST_METHOD" in headers else MAPPING
    return PAIRS


def get_header(headers: Any, name: str) -> list[Any]:
    """Every value of header ``name`` in ``headers``, whatever their shape."""
    return shape_of(headers).get(headers, name.lower())


def set_header(headers: Any, name: str, value: str) -> None:
    """Set header ``name`` to ``value`` in ``headers``, replacing every value it had."""
    shape_of(headers).set(headers, name.lower(), value)
