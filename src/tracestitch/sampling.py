"""Which traces are kept at a sampling rate: decided as the LangSmith SDKs decide it.

The decision is a pure function of the trace id and the rate, the same in every process and
every SDK, so a fleet that mixes tracestitch with LangSmith-instrumented services (Python 0.14+,
JS 0.12+) keeps or drops a trace in all of them alike: XXH3-128 of the trace id's canonical text
(hyphenated, lower case, UTF-8), taken modulo 1,000,000, as a fraction of that modulus, kept when
below the rate. A service with a higher rate keeps a superset of the traces one with a lower
rate keeps. ``tests/test_sampling.py`` compares the decisions with the installed SDK's.

The rate comes from the middleware's ``sample_rate``, else the environment
(``TRACESTITCH_TRACING_SAMPLING_RATE``, then the SDKs' ``LANGSMITH_TRACING_SAMPLING_RATE`` and
``LANGCHAIN_TRACING_SAMPLING_RATE``; read by :mod:`tracestitch.settings`).
"""

from __future__ import annotations

import os
import uuid

import xxhash

from tracestitch.propagation.model import RemoteParent
from tracestitch.settings import read_env

__all__ = ["continues", "default_rate", "is_sampled"]

#: The SDKs' hash modulus: rates are honoured to a millionth.
_MODULUS = 1_000_000
_hash = xxhash.xxh3_128_intdigest
_env_rate = read_env(os.environ, warn=False).sampling_rate


def is_sampled(trace_id: uuid.UUID | str, rate: float | None) -> bool:
    """Whether the trace ``trace_id`` is kept at ``rate`` (``None``: no sampling, kept)."""
    if rate is None or rate >= 1:
        return True
    if rate <= 0:
        return False
    text = str(trace_id).lower()
    return _hash(text.encode()) % _MODULUS / _MODULUS < rate


def continues(remote: RemoteParent, rate: float | None) -> bool:
    """Whether the trace of a caller's run (as :func:`tracestitch.propagation.extract` read
    it) is recorded here at ``rate``: an OpenTelemetry caller's sampled flag decides, whatever
    the rate (as OpenTelemetry's parent-based sampler does); else the trace id, as
    :func:`is_sampled` decides it."""
    if not remote.sampled:
        return False
    return remote.from_w3c or is_sampled(remote.trace_id, rate)


def default_rate() -> float | None:
    """The sampling rate the environment sets for this process, or ``None`` (keep all)."""
    return _env_rate
