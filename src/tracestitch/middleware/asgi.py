"""Pure ASGI middleware: one run per HTTP request (Starlette, FastAPI, any ASGI app).

Written as Starlette writes its own middleware (never ``BaseHTTPMiddleware``, which runs the app
in another task and so loses context variables). Needs no framework: Starlette's router leaves
the matched route in ``scope["route"]``, and its ``path_format`` is read from there when present.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tracestitch._guard import report
from tracestitch.context import _current_run, tracing_context
from tracestitch.exporter import get_exporter
from tracestitch.middleware._common import (
    MiddlewareOptions,
    Outcome,
    ServerTracer,
    resolve_options,
)
from tracestitch.run_tree import RunTree

__all__ = ["TracingMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SHUTDOWN_DONE = frozenset(("lifespan.shutdown.complete", "lifespan.shutdown.failed"))
_MAX_CACHED_NAMES = 4096
_MAX_MOUNT_DEPTH = 32
_MAX_CHAINS = 64
_MOUNT_TAIL = "/{path}"


def _mount_template(node: Any) -> str | None:
    """The path template a Starlette ``Mount`` puts in front of its routes (``"/{tenant}"``
    for ``Mount("/{tenant}", ...)``), or ``None`` when ``node`` is no mount. Duck-typed, so no
    framework is imported: a Mount compiles ``path + "/{path:path}"`` and has ``routes``."""
    fmt = getattr(node, "path_format", None)
    if (
        isinstance(fmt, str)
        and fmt.endswith(_MOUNT_TAIL)
        and hasattr(node, "routes")
        and hasattr(node, "path_regex")
    ):
        return fmt[: -len(_MOUNT_TAIL)]
    return None


def _index_routes(routes: Any) -> dict[int, tuple[Any, tuple[tuple[Any, ...], ...]]]:
    """id(node) -> (node, chains of mounts above it) for every node of a routing tree.

    A ``Host`` (``routes`` but no path template) adds nothing to the path; the same router
    mounted twice gives its routes two chains. Depth and chain counts are bounded."""
    found: dict[int, tuple[Any, list[tuple[Any, ...]]]] = {}
    open_nodes: set[int] = set()  # containers being walked: a cycle must not recurse forever

    def walk(nodes: Any, chain: tuple[Any, ...]) -> None:
        if not isinstance(nodes, list):
            return
        for node in nodes:
            entry = found.setdefault(id(node), (node, []))
            if len(entry[1]) < _MAX_CHAINS:
                entry[1].append(chain)
            children = getattr(node, "routes", None)
            if not children or id(node) in open_nodes or len(chain) >= _MAX_MOUNT_DEPTH:
                continue
            open_nodes.add(id(node))
            walk(children, (*chain, node) if _mount_template(node) is not None else chain)
            open_nodes.discard(id(node))

    walk(routes, ())
    return {key: (node, tuple(chains)) for key, (node, chains) in found.items()}


def _chain_matches(mounts: tuple[Any, ...], prefix: str) -> bool:
    """Whether ``mounts`` (outermost first), matched as Starlette matches them, consume exactly
    ``prefix``: the concrete text the mounts moved into ``root_path``."""
    rest = prefix + "/"
    for mount in mounts:
        regex = getattr(mount, "path_regex", None)
        match = regex.match(rest) if regex is not None else None
        if match is None:
            return False
        rest = "/" + match.group("path")
    return rest == "/"


class TracingMiddleware:
    """Traces every HTTP request as a run named ``"{METHOD} {route}"``; lifespan and websocket
    scopes pass straight through, and lifespan shutdown flushes the exporter::

        app.add_middleware(TracingMiddleware, service="checkout", exclude=["/health"])

    Keyword options are those of :class:`tracestitch.middleware.MiddlewareOptions` (or pass
    ``options=MiddlewareOptions(...)``).
    """

    def __init__(
        self, app: ASGIApp, *, options: MiddlewareOptions | None = None, **kwargs: Any
    ) -> None:
        self.app = app
        options = resolve_options(options, kwargs)
        self.options = options
        self._tracer = ServerTracer(options, app)
        self._app_seen = options.service is not None
        # (id(route), method, index of its mount chain) -> (route, run name): route objects live
        # as long as the app, and keeping the route in the value guards against a reused id().
        # Keys hold no request text, so callers cannot fill the cache.
        self._names: dict[tuple[int, str, int], tuple[Any, str]] = {}
        # (id(route), method) -> (route, run name) for routes under no mount (see _run_name).
        self._plain_names: dict[tuple[int, str], tuple[Any, str]] = {}
        # id(route) -> (route, the chains of Mounts leading to it): see _mount_chains.
        self._chains: dict[int, tuple[Any, tuple[tuple[Any, ...], ...]]] = {}
        header = self._tracer.trace_header
        self._trace_header = header.encode("latin-1") if header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self.app(scope, receive, self._lifespan_send(send))
            else:
                await self.app(scope, receive, send)
            return
        exchange: _Exchange | Outcome | None = None
        try:
            exchange = self._begin(scope, receive, send)
        except Exception as exc:
            report("middleware.asgi.start", exc)
        if exchange is None:
            await self.app(scope, receive, send)
            return
        if exchange is Outcome.DISABLED:
            with tracing_context(enabled=False, parent=None):
                await self.app(scope, receive, send)
            return
        assert isinstance(exchange, _Exchange)
        token = _current_run.set(exchange.run)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            exchange.end(exc, incomplete=False)
            raise
        finally:
            # The run stays current until the app returns, so Starlette background tasks
            # (run after the last body chunk) still nest under it.
            _current_run.reset(token)
        if not exchange.done:
            exchange.end(None, incomplete=True)

    def _begin(self, scope: Scope, receive: Receive, send: Send) -> _Exchange | Outcome | None:
        tracer = self._tracer
        if not self._app_seen:
            self._app_seen = True
            app = scope.get("app")
            if app is not None:
                tracer.learn_app(app)
        method: str = scope["method"]
        path: str = scope["path"]
        pairs = scope.get("headers") or ()
        headers, has_trace = tracer.scan_pairs(pairs)
        parent = tracer.decide(method, path, pairs, has_trace)
        if parent is None or parent is Outcome.DISABLED:
            return parent
        raw_query = scope.get("query_string")
        client = scope.get("client")
        inputs = tracer.inputs(
            method,
            path,
            raw_query.decode("latin-1") if raw_query else "",
            client[0] if client else None,
            headers,
        )
        server = scope.get("server")
        run = tracer.start(parent, tracer.name(method, path), inputs, server)
        return _Exchange(self, scope, run, receive, send)

    def _run_name(self, scope: Scope, root_path: str, app: Any) -> str | None:
        """``"{METHOD} {template}"`` once routing has happened, or ``None`` (keep the path)."""
        tracer = self._tracer
        method: str = scope["method"]
        resolver = tracer.route_resolver
        if resolver is not None:
            template = resolver(scope)
            if template:
                return tracer.name(method, template)
        route = scope.get("route")
        if route is None:
            return None
        if scope.get("root_path", "") == root_path:
            # No mount moved anything into root_path: a route met before outside any mount
            # has its name cached by identity (the common case, one lookup a request).
            plain = self._plain_names.get((id(route), method))
            if plain is not None and plain[0] is route:
                return plain[1]
        template = getattr(route, "path_format", None)
        if not isinstance(template, str):
            return None
        # Each Mount moves what it matched into root_path: what was added since we saw the
        # scope is the concrete text of the mounts (caller-controlled under "/{tenant}").
        prefix: str = scope.get("root_path", "")
        if prefix == root_path:
            prefix = ""
        elif prefix.startswith(root_path):
            prefix = prefix[len(root_path) :]
        chains = self._mount_chains(route, app)
        for index, chain in enumerate(chains):
            # The chain Starlette took is the one whose mounts match the concrete prefix.
            if not _chain_matches(
                (*chain, route) if _mount_template(route) is not None else chain, prefix
            ):
                continue
            key = (id(route), method, index)
            cached = self._names.get(key)
            if cached is not None and cached[0] is route:
                return cached[1]
            name = tracer.name(method, "".join(_mount_template(m) or "" for m in chain) + template)
            if len(self._names) < _MAX_CACHED_NAMES:
                self._names[key] = (route, name)
                if not prefix and chains == ((),) and _mount_template(route) is None:
                    self._plain_names[(id(route), method)] = (route, name)
            return name
        # The mounts are unknown (e.g. a sub-app behind middleware without `routes`): the
        # concrete prefix, never cached, so caller-controlled text cannot fill the cache.
        if prefix and _mount_template(route) is not None:
            return None  # the mount's own match is in the prefix: keep the path
        return tracer.name(method, prefix + template)

    def _mount_chains(self, route: Any, app: Any) -> tuple[tuple[Any, ...], ...]:
        """The chains of mounts (outermost first) under which ``route`` sits in the routing
        tree of the app we wrap; indexed once per route object, not per request."""
        entry = self._chains.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        # Our app's routes when it has them; else (added with app.add_middleware, so we wrap
        # Starlette's inner stack) the app Starlette put in the scope before calling us.
        root = self.app if isinstance(getattr(self.app, "routes", None), list) else app
        found = _index_routes(getattr(root, "routes", None))
        self._chains.update(found)
        entry = self._chains.get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        # Found nowhere (an opaque sub-app): remembered, so it costs one walk, not one a request.
        if len(self._chains) < _MAX_CACHED_NAMES:
            self._chains[id(route)] = (route, ())
        return ()

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            # After the app's own shutdown handlers (which may still make runs), before the
            # server is told it may exit.
            if message.get("type") in _SHUTDOWN_DONE:
                await self._flush()
            await send(message)

        return lifespan_send

    async def _flush(self) -> None:
        try:
            exporter = get_exporter()
            timeout = self.options.flush_timeout
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not asyncio (trio): a bounded blocking flush is acceptable
                exporter.flush(timeout)
                return
            # flush() blocks for up to `timeout`; other apps on this loop keep shutting down.
            await loop.run_in_executor(None, exporter.flush, timeout)
        except Exception as exc:
            report("middleware.asgi.flush", exc)


class _Exchange:
    """One traced request: wraps ``send`` to see the status and the last body chunk."""

    __slots__ = (
        "_mw",
        "_receive",
        "_send",
        "app",
        "done",
        "root_path",
        "run",
        "scope",
        "size",
        "status",
    )

    def __init__(
        self, mw: TracingMiddleware, scope: Scope, run: RunTree, receive: Receive, send: Send
    ) -> None:
        self._mw = mw
        self._receive = receive
        self._send = send
        self.scope = scope
        self.run = run
        self.root_path: str = scope.get("root_path", "")
        # Starlette's app as it was when we were called: a mounted sub-app replaces it later.
        self.app: Any = scope.get("app")
        self.status: int | None = None
        self.size = 0
        self.done = False

    async def send(self, message: Message) -> None:
        final = False
        if not self.done:
            try:
                kind = message["type"]
                if kind == "http.response.body":
                    body = message.get("body")
                    if body:
                        self.size += len(body)
                    final = not message.get("more_body", False)
                elif kind == "http.response.start":
                    self.status = message.get("status")
                    name = self._mw._trace_header
                    if name is not None:
                        value = str(self.run.trace_id).encode("latin-1")
                        headers = [*message.get("headers", ()), (name, value)]
                        message = {**message, "headers": headers}
                else:
                    final = kind == "http.response.pathsend"
            except Exception as exc:
                report("middleware.asgi.send", exc)
        await self._send(message)
        if final:
            # After the server took the last chunk: a streamed response's run lasts as long
            # as the stream did.
            self.end(None, incomplete=False)

    async def receive(self) -> Message:
        message = await self._receive()
        if not self.done and message.get("type") == "http.disconnect":
            self.end(None, incomplete=True)
        return message

    def end(self, error: BaseException | None, *, incomplete: bool) -> None:
        if self.done:
            return
        self.done = True
        try:
            mw = self._mw
            name = mw._run_name(self.scope, self.root_path, self.app)
            if name is not None:
                mw._tracer.routed(self.run, name)
            mw._tracer.finish(self.run, self.status, self.size, error, incomplete=incomplete)
        except Exception as exc:
            report("middleware.asgi.finish", exc)
