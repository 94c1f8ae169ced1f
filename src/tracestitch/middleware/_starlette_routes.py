"""The route template of a request Starlette (or FastAPI) has routed, mounts included.

Starlette's router leaves the matched route in ``scope["route"]``, and its ``path_format`` is
the template. Under a ``Mount`` that is only the tail: each mount moves the concrete text it
matched into ``root_path`` (``/acme`` for ``Mount("/{tenant}")``). So the routing tree is walked
once per route object to find the chains of mounts above it, and the chain the request took is
the one whose mounts match the concrete prefix; its templates go in front. Duck-typed, so no
framework is imported: a mount compiles ``path + "/{path:path}"`` and has ``routes``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["StarletteRoutes"]

_MAX_PLACES = 4096  # route objects live as long as the app: this only bounds the pathological
_MAX_DEPTH = 32
_MAX_CHAINS = 64
_MOUNT_TAIL = "/{path}"


def _mount_template(node: Any) -> str | None:
    """The template a ``Mount`` puts in front of its routes (``"/{tenant}"``), else ``None``."""
    fmt = getattr(node, "path_format", None)
    if (
        isinstance(fmt, str)
        and fmt.endswith(_MOUNT_TAIL)
        and hasattr(node, "routes")
        and hasattr(node, "path_regex")
    ):
        return fmt[: -len(_MOUNT_TAIL)]
    return None


class _Place:
    """Where one route object sits: the chains of mounts above it (outermost first; a router
    mounted twice gives two), and each chain's templates joined."""

    __slots__ = ("chains", "is_mount", "plain", "prefixes", "route", "template")

    def __init__(self, route: Any, chains: tuple[tuple[Any, ...], ...]) -> None:
        self.route = route
        template = getattr(route, "path_format", None)
        self.template = template if isinstance(template, str) else None
        self.is_mount = _mount_template(route) is not None
        self.chains = tuple((*c, route) if self.is_mount else c for c in chains)
        self.prefixes = tuple("".join(_mount_template(m) or "" for m in c) for c in chains)
        self.plain = chains == ((),) and not self.is_mount  # under no mount at all


def _index(routes: Any) -> dict[int, _Place]:
    """id(node) -> its place, for every node of a routing tree (bounded depth and chains; a
    ``Host`` adds nothing to the path; a cycle is not followed)."""
    found: dict[int, tuple[Any, list[tuple[Any, ...]]]] = {}
    open_nodes: set[int] = set()

    def walk(nodes: Any, chain: tuple[Any, ...]) -> None:
        if not isinstance(nodes, list):
            return
        for node in nodes:
            entry = found.setdefault(id(node), (node, []))
            if len(entry[1]) < _MAX_CHAINS:
                entry[1].append(chain)
            children = getattr(node, "routes", None)
            if not children or id(node) in open_nodes or len(chain) >= _MAX_DEPTH:
                continue
            open_nodes.add(id(node))
            walk(children, (*chain, node) if _mount_template(node) is not None else chain)
            open_nodes.discard(id(node))

    walk(routes, ())
    return {key: _Place(node, tuple(chains)) for key, (node, chains) in found.items()}


def _matches(mounts: tuple[Any, ...], prefix: str) -> bool:
    """Whether ``mounts``, matched as Starlette matches them, consume exactly ``prefix``."""
    rest = prefix + "/"
    for mount in mounts:
        regex = getattr(mount, "path_regex", None)
        match = regex.match(rest) if regex is not None else None
        if match is None:
            return False
        rest = "/" + match.group("path")
    return rest == "/"


class StarletteRoutes:
    """Route templates for the app one ASGI middleware wraps; one cache, keyed by the route
    objects' ids (they hold no request text, so callers cannot fill it)."""

    __slots__ = ("_app", "_places")

    def __init__(self, app: Any) -> None:
        self._app = app
        self._places: dict[int, _Place] = {}

    def template(self, scope: MutableMapping[str, Any], root_path: str, app: Any) -> str | None:
        """The template for ``scope`` once routed; ``root_path`` and ``app`` as they were when
        the middleware was called (a mounted sub-app replaces both later)."""
        route = scope.get("route")
        if route is None:
            return None
        place = self._places.get(id(route))
        if place is None or place.route is not route:
            place = self._place(route, app)
        template = place.template
        if template is None:
            return None
        # What mounts moved into root_path since we saw the scope: their concrete text.
        prefix: str = scope.get("root_path", "")
        if prefix == root_path:
            prefix = ""
        elif prefix.startswith(root_path):
            prefix = prefix[len(root_path) :]
        if not prefix and place.plain:
            return template
        for chain, mounts in zip(place.chains, place.prefixes, strict=True):
            if _matches(chain, prefix):
                return mounts + template
        # The mounts are unknown (a sub-app behind middleware without `routes`): the concrete
        # prefix; but a mount's own match is in the prefix, so then keep the path.
        if prefix and place.is_mount:
            return None
        return prefix + template

    def _place(self, route: Any, app: Any) -> _Place:
        # Our app's routes when it has them; else (added with app.add_middleware, so we wrap
        # Starlette's inner stack) the app Starlette put in the scope before calling us.
        root = self._app if isinstance(getattr(self._app, "routes", None), list) else app
        if len(self._places) < _MAX_PLACES:
            self._places.update(_index(getattr(root, "routes", None)))
        place = self._places.get(id(route))
        if place is None or place.route is not route:
            # Found nowhere (an opaque sub-app): remembered, so it costs one walk in all.
            place = _Place(route, ())
            if len(self._places) < _MAX_PLACES:
                self._places[id(route)] = place
        return place
