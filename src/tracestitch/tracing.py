"""``@traceable`` and ``trace()``: child runs from ordinary code.

Each traced call creates a run under the current one (or a root), makes it current while the
body runs, and ends it with the outputs or the exception, which is re-raised unchanged; the run
is handed to the exporter once, complete, when it ends. The
tracing work itself is guarded: if it fails, the function still runs, untraced. There are no
executor hops: async functions are awaited in the caller's task.

Generators are traced across their whole life: the run is current only while the generator body
runs (each ``next``/``send``), never while the caller holds a yielded value, and it ends when the
generator is exhausted, closed or raises. Its output is the list of yielded items (capped).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Collection, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from tracestitch.instrument import (
    CURRENT,
    Parent,
    attach,
    detach,
    finish_run,
    remote_parent,
    report,
    start_run,
)
from tracestitch.run_tree import RunTree

__all__ = ["MAX_GENERATOR_ITEMS", "continue_trace", "trace", "traceable"]

F = TypeVar("F", bound=Callable[..., Any])
#: Yielded items kept as a generator run's output; the count is always recorded.
MAX_GENERATOR_ITEMS = 100


class _InputBinder:
    """Maps a call's arguments to an inputs dict without ``inspect.Signature.bind`` (~10x
    slower): parameter names are read once at decoration time."""

    __slots__ = ("names", "skip_first", "var_keyword", "var_positional")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.names = tuple(p.name for p in params if p.kind in positional)
        self.skip_first = bool(self.names) and self.names[0] in ("self", "cls")
        self.var_positional = next(
            (p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None
        )
        self.var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self.names
        inputs = dict(zip(names, args, strict=False))  # extra args are handled below
        if self.skip_first and args:
            del inputs[names[0]]
        if len(args) > len(names):
            inputs[self.var_positional or "args"] = args[len(names) :]
        if kwargs:
            inputs.update(kwargs)
        return inputs


@overload
def traceable(func: F, /) -> F: ...


@overload
def traceable(
    func: None = None,
    /,
    *,
    name: str | None = None,
    run_type: str = "chain",
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    project_name: str | None = None,
    process_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    process_outputs: Callable[[Any], Any] | None = None,
) -> Callable[[F], F]: ...


def traceable(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    run_type: str = "chain",
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
    project_name: str | None = None,
    process_inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    process_outputs: Callable[[Any], Any] | None = None,
) -> Any:
    """Trace every call of a function (sync, async, generator or async generator) as a run.

    ``process_inputs`` / ``process_outputs`` transform what is recorded (to redact, say); they
    never change what the function receives or returns::

        @traceable(run_type="retriever", process_inputs=lambda i: {"q": i["query"][:200]})
        async def search(query: str) -> list[str]: ...
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        run_name: str = name or getattr(fn, "__name__", None) or "Unnamed"
        bind = _InputBinder(fn)
        meta = dict(metadata) if metadata else None
        tag_list = list(tags) if tags else None

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunTree | None:
            try:
                inputs = bind(args, kwargs)
                if process_inputs is not None:
                    inputs = process_inputs(inputs)
            except Exception as exc:
                report("tracing.inputs", exc)
                inputs = {}
            return start_run(run_name, run_type, CURRENT, inputs, meta, tag_list, project_name)

        def finish(run: RunTree, result: Any) -> None:
            if process_outputs is not None:
                try:
                    result = process_outputs(result)
                except Exception as exc:
                    report("tracing.outputs", exc)
                    result = None
            # Handed on once, complete: a post at start would make the worker serialize a
            # short run two or three times (open, ended, merged). A run open for long is
            # posted by the worker's sweep meanwhile, and then this is a patch (open_runs).
            finish_run(run, result if isinstance(result, dict) else {"output": result})

        if inspect.isasyncgenfunction(fn):
            return _wrap_async_generator(fn, start, finish)
        if inspect.isgeneratorfunction(fn):
            return _wrap_generator(fn, start, finish)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                run = start(args, kwargs)
                if run is None:
                    return await fn(*args, **kwargs)
                token = attach(run)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as exc:
                    finish_run(run, error=exc)
                    raise
                finally:
                    detach(token)
                finish(run, result)
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            run = start(args, kwargs)
            if run is None:
                return fn(*args, **kwargs)
            token = attach(run)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                finish_run(run, error=exc)
                raise
            finally:
                detach(token)
            finish(run, result)
            return result

        return wrapper

    return decorate if func is None else decorate(func)


class _Yielded:
    """What a traced generator has yielded so far: the first items and the count."""

    __slots__ = ("count", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.count = 0

    def add(self, value: Any) -> None:
        self.count += 1
        if len(self.items) < MAX_GENERATOR_ITEMS:
            self.items.append(value)

    def outputs(self, **extra: Any) -> dict[str, Any]:
        return {"output": self.items, "count": self.count, **extra}


def _wrap_generator(
    fn: Callable[..., Generator[Any, Any, Any]],
    start: Callable[[tuple[Any, ...], dict[str, Any]], RunTree | None],
    finish: Callable[[RunTree, Any], None],
) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(fn)
    def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        run = start(args, kwargs)
        gen = fn(*args, **kwargs)
        if run is None:
            return (yield from gen)
        yielded = _Yielded()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = attach(run)
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    value = gen.throw(exc)
                else:
                    value = gen.send(to_send)
            except StopIteration as stop:
                finish(run, yielded.outputs(**{"return": stop.value}))
                return stop.value
            except BaseException as exc:
                finish_run(run, error=exc)
                raise
            finally:
                detach(token)
            yielded.add(value)
            try:
                to_send = yield value
            except GeneratorExit:
                gen.close()
                finish(run, yielded.outputs(closed_early=True))
                raise
            except BaseException as exc:
                to_throw = exc

    return generator_wrapper


def _wrap_async_generator(
    fn: Callable[..., AsyncGenerator[Any, Any]],
    start: Callable[[tuple[Any, ...], dict[str, Any]], RunTree | None],
    finish: Callable[[RunTree, Any], None],
) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(fn)
    async def async_generator_wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        run = start(args, kwargs)
        agen = fn(*args, **kwargs)
        if run is None:
            async for item in agen:
                yield item
            return
        yielded = _Yielded()
        to_send: Any = None
        to_throw: BaseException | None = None
        while True:
            token = attach(run)
            try:
                if to_throw is not None:
                    exc, to_throw = to_throw, None
                    value = await agen.athrow(exc)
                else:
                    value = await agen.asend(to_send)
            except StopAsyncIteration:
                finish(run, yielded.outputs())
                return
            except BaseException as exc:
                finish_run(run, error=exc)
                raise
            finally:
                detach(token)
            yielded.add(value)
            try:
                to_send = yield value
            except GeneratorExit:
                await agen.aclose()
                finish(run, yielded.outputs(closed_early=True))
                raise
            except BaseException as exc:
                to_throw = exc

    return async_generator_wrapper


class trace:
    """A run around a block, sync or async; the block sees it as the current run::

        with trace("rerank", run_type="tool", inputs={"k": 5}) as run:
            ranked = rerank(docs)
            run.end(outputs={"n": len(ranked)})  # optional: ended on exit anyway

    An exception leaving the block is recorded on the run and propagates unchanged. When
    tracing is off the block still runs and ``run`` is ``None``.
    """

    __slots__ = ("_args", "_kind", "_parent", "_run", "_token")

    def __init__(
        self,
        name: str,
        run_type: str = "chain",
        *,
        inputs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        project_name: str | None = None,
        parent: RunTree | None = None,
    ) -> None:
        self._args = (name, run_type, dict(inputs or {}), metadata, tags, project_name)
        self._parent: RunTree | Literal[Parent.CURRENT] | None = (
            CURRENT if parent is None else parent
        )
        self._kind: str | None = None
        self._run: RunTree | None = None
        self._token: Any = None

    def __enter__(self) -> RunTree | None:
        name, run_type, inputs, metadata, tags, project_name = self._args
        self._run = start_run(
            name,
            run_type,
            parent=self._parent,
            inputs=inputs,
            metadata=metadata,
            tags=tags,
            project_name=project_name,
            kind=self._kind,
        )
        if self._run is not None:
            self._token = attach(self._run)
        return self._run

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self._run
        if run is None:
            return
        detach(self._token)
        if exc is not None:
            finish_run(run, error=exc)
        else:  # ended now, or (ended by the block itself) only handed on
            finish_run(run)

    async def __aenter__(self) -> RunTree | None:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class continue_trace(trace):
    """A run around a block that continues the trace carried by ``headers``: one call for a
    message consumer (Kafka, NATS, SQS, Redis streams, ...)::

        for message in consumer:
            with continue_trace(message.headers, name="orders.process") as run:
                process(message.value)

    ``headers`` are the message's, in any shape: a mapping (``str`` or ``bytes`` keys), or a
    list of ``(name, value)`` pairs with ``str`` or ``bytes`` values, as Kafka and NATS clients
    give them. The run is a child of the producer's run; when they carry no trace, or one not
    to be believed (malformed, hostile: counted in :mod:`tracestitch.propagation`'s stats),
    it starts a new trace, never an exception. ``trust`` says what the producer's baggage may
    set here, as :func:`tracestitch.propagation.extract` takes it. Otherwise as :class:`trace`:
    the run is current inside the block, ends with the exception that leaves it (re-raised
    unchanged), and is ``None`` when tracing is off. Its role is ``kind`` (``"consumer"``:
    a CONSUMER span in OTLP).
    """

    __slots__ = ()

    def __init__(
        self,
        headers: Any,
        name: str,
        run_type: str = "chain",
        *,
        inputs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
        project_name: str | None = None,
        trust: bool | Collection[str] = True,
        kind: str | None = "consumer",
    ) -> None:
        super().__init__(
            name,
            run_type,
            inputs=inputs,
            metadata=metadata,
            tags=tags,
            project_name=project_name,
        )
        # None (no trace, or a rejected one) is a new root, not the run current here.
        try:
            # A message with no headers at all: Kafka and NATS clients give None.
            self._parent = None if headers is None else remote_parent(headers, trust=trust)
        except Exception as exc:  # the consumer runs on, in a new trace
            report("tracing.continue_trace", exc)
            self._parent = None
        self._kind = kind
