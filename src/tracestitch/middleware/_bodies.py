"""A response body the server pulls chunk by chunk after the app has returned (a WSGI
response iterable, a Django streamed response, sync or async): its chunks are made in the
request's context, counted, and the run ends after the last one, or when the body is closed
before it (the client went away).

The context is the request's run (``activate``) or, for a request not traced here, tracing
off (``untraced``); an untraced body has no :class:`Exchange <._exchange.Exchange>`.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from tracestitch.instrument import report
from tracestitch.middleware._exchange import Exchange

__all__ = ["AsyncBody", "Body", "Context"]

#: What a chunk is made in: ``functools.partial(activate, run)``, or ``untraced``'s.
Context = Callable[[], AbstractContextManager[Any]]


class _Chunks:
    """What the sync and async bodies share: the end of the run, the count, ``close``."""

    __slots__ = ("_context", "_exchange", "_iterator", "_source")

    def __init__(self, source: Any, exchange: Exchange | None, context: Context) -> None:
        self._source = source
        self._exchange = exchange
        self._context = context
        self._iterator: Any = None

    def _ended(self, exc: BaseException) -> None:
        """The source stopped (``exc``): after its last chunk, or with an error."""
        exchange = self._exchange
        if exchange is not None:
            if isinstance(exc, (StopIteration, StopAsyncIteration)):
                exchange.end()
            else:
                exchange.end(exc)

    def _took(self, chunk: Any) -> None:
        if self._exchange is not None:
            try:
                self._exchange.size += len(chunk)
            except Exception as exc:  # not bytes: the server will say so, not us
                report(f"{self._exchange.site}.body", exc)

    def close(self) -> None:
        """Close the source (its teardown code still belongs to the request), then end the
        run: closed before the last chunk, the client went away or the server gave up."""
        close = getattr(self._source, "close", None)
        if close is not None:
            with self._context():
                try:
                    close()
                except BaseException as exc:
                    self._ended(exc)
                    raise
        if self._exchange is not None:
            self._exchange.end(incomplete=True)  # does nothing after the last chunk


class Body(_Chunks):
    """A sync body: iterating it iterates ``source`` (first ``iter()`` made in the context
    too, as a WSGI app's may run app code)."""

    __slots__ = ()

    def __init__(self, source: Iterable[Any], exchange: Exchange | None, context: Context) -> None:
        super().__init__(source, exchange, context)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        with self._context():
            try:
                iterator = self._iterator
                if iterator is None:
                    iterator = self._iterator = iter(self._source)
                chunk = next(iterator)
            except BaseException as exc:
                self._ended(exc)
                raise
        self._took(chunk)
        return chunk


class AsyncBody(_Chunks):
    """An async body (no ``__iter__``: Django tells sync from async bodies by ``iter()``)."""

    __slots__ = ()

    def __init__(
        self, source: AsyncIterable[Any], exchange: Exchange | None, context: Context
    ) -> None:
        super().__init__(source, exchange, context)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        with self._context():
            try:
                iterator = self._iterator
                if iterator is None:
                    iterator = self._iterator = aiter(self._source)
                chunk = await anext(iterator)
            except BaseException as exc:
                self._ended(exc)
                raise
        self._took(chunk)
        return chunk
