"""Which keys each query attends, summed exactly over the queries and forward passes of a phase.

Positions are 1-based. A prefill computes the tokens ``cached + 1 .. context``. Before key
selection, the query at position t may attend keys 1..t (itself included). A decode step at
context N is the one query at position N. Per key selection, the query at position t attends:

- dense: t keys.
- window W with S sink tokens: min(t, W) + min(S, max(0, t - W)) keys (the sinks are counted when
  they fall outside the window).
- DSA top-k: min(t, k) keys, chosen from keys 1..t.
- MSA with blocks of b keys and top-K blocks: t keys while ceil(t/b) <= K; otherwise K - local
  full blocks plus the local blocks, the last of which ends at t. Every KV group attends the same
  number of keys, so the count is deterministic.

Each function takes Python ints (exact) or float64 arrays of contexts (see ``arith``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from ctxsim.counts.arith import (
    ceil_div,
    maximum,
    minimum,
    sum_arith_clamped,
    sum_ceil_div,
    sum_min,
    sum_partial_block,
    triangle,
)
from ctxsim.counts.report import Number
from ctxsim.spec.layers import DenseSelection, DSASelection, MSASelection, WindowSelection


@dataclass(slots=True)
class Span:
    """The queries of one sequence in one phase: positions ``cached + 1 .. context``.

    They run in ``n_chunks`` forward passes: all but the last hold ``chunk`` queries, the last
    has ``last_chunk``. A decode step is the span ``context - 1 .. context``.
    """

    cached: Number
    context: Number
    chunk: Number
    n_chunks: Number
    last_chunk: Number

    @property
    def new_tokens(self) -> Number:
        return self.context - self.cached


def make_span(cached: Number, context: Number, chunk_size: int | None = None) -> Span:
    """Span of a prefill of ``cached + 1 .. context``, in chunks of ``chunk_size`` when given."""
    new_tokens = context - cached
    if chunk_size is None:
        return Span(cached, context, new_tokens, 1, new_tokens)
    n_chunks = ceil_div(new_tokens, chunk_size)
    return Span(cached, context, chunk_size, n_chunks, new_tokens - (n_chunks - 1) * chunk_size)


def decode_span(context: Number) -> Span:
    """Span of one decode step: the query at position ``context``."""
    return Span(context - 1, context, 1, 1, 1)


# ---------------------------------------------------------------------------------------------
# Tracing hook for ctxsim.counts.totals


class Tracer:
    """Base of the stand-ins for a Span or PhaseRun with which ``ctxsim.counts.totals`` traces ops."""

    __slots__ = ()

    def trace_sum(self, fn: Callable[..., Number], args: tuple, kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError


def traceable(fn: Callable[..., Number]) -> Callable[..., Number]:
    """Let ``ctxsim.counts.totals`` replace calls of the span sum ``fn`` by symbols.

    Called with a Tracer among its arguments, the wrapper returns the Tracer's symbol for the
    call instead of computing it. Every other call runs ``fn`` unchanged.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Number:
        for arg in args:
            if isinstance(arg, Tracer):
                return arg.trace_sum(fn, args, kwargs)
        return fn(*args, **kwargs)

    return call


# ---------------------------------------------------------------------------------------------
# Keys attended by one query


def keys_at(selection: object, t: int) -> int:
    """Keys the query at position ``t`` attends under ``selection`` (gathered execution)."""
    if isinstance(selection, WindowSelection):
        return min(t, selection.window) + min(selection.sink_tokens, max(0, t - selection.window))
    if isinstance(selection, DSASelection):
        return min(t, selection.index_topk)
    if isinstance(selection, MSASelection):
        return _msa_key_prefix(selection, t) - _msa_key_prefix(selection, t - 1)
    return t


# ---------------------------------------------------------------------------------------------
# Sums over the queries of a span


@traceable
def dense_key_sum(span: Span) -> Number:
    """Sum of t over the span's queries: keys seen before selection."""
    return triangle(span.context) - triangle(span.cached)


def _window_key_prefix(selection: WindowSelection, x: Number) -> Number:
    beyond = maximum(x - selection.window, 0)
    return sum_min(x, selection.window) + sum_min(beyond, selection.sink_tokens)


def _msa_key_prefix(selection: MSASelection, x: Number) -> Number:
    """Keys attended by queries 1..x of one MSA layer (every group attends the same count)."""
    b = selection.block_size
    span_tokens = selection.topk_blocks * b  # queries up to here attend every key
    head = minimum(x, span_tokens)
    beyond = maximum(x - span_tokens, 0)
    if selection.local_blocks == 0:
        # NOTE: with no forced local block, the K picks are assumed to be full blocks.
        return triangle(head) + beyond * span_tokens
    full_blocks = (selection.topk_blocks - 1) * b
    partial = sum_partial_block(maximum(x, span_tokens), b) - sum_partial_block(span_tokens, b)
    return triangle(head) + beyond * full_blocks + partial


@traceable
def selected_key_sum(selection: object, span: Span, masked: bool = False) -> Number:
    """Sum over the span's queries of the keys each one attends.

    ``masked`` makes DSA and MSA layers attend every visible key (dense scores plus a mask);
    window layers always run as a band.
    """
    if isinstance(selection, WindowSelection):
        return _window_key_prefix(selection, span.context) - _window_key_prefix(selection, span.cached)
    if masked or isinstance(selection, DenseSelection):
        return dense_key_sum(span)
    if isinstance(selection, DSASelection):
        k = selection.index_topk
        return sum_min(span.context, k) - sum_min(span.cached, k)
    return _msa_key_prefix(selection, span.context) - _msa_key_prefix(selection, span.cached)


def _msa_selected_block_prefix(selection: MSASelection, x: Number) -> Number:
    span_tokens = selection.topk_blocks * selection.block_size
    head = minimum(x, span_tokens)
    return sum_ceil_div(head, selection.block_size) + selection.topk_blocks * maximum(x - span_tokens, 0)


@traceable
def msa_block_sum(selection: MSASelection, span: Span) -> Number:
    """Sum over the span's queries of ceil(t / block_size): candidate blocks per group."""
    b = selection.block_size
    return sum_ceil_div(span.context, b) - sum_ceil_div(span.cached, b)


@traceable
def msa_selected_block_sum(selection: MSASelection, span: Span) -> Number:
    """Sum over the span's queries of min(ceil(t / block_size), topk_blocks): picked blocks per group."""
    return _msa_selected_block_prefix(selection, span.context) - _msa_selected_block_prefix(selection, span.cached)


# ---------------------------------------------------------------------------------------------
# Sums over the forward passes (chunks) of a span


@traceable
def dense_visible_sum(span: Span) -> Number:
    """Sum over chunks of the keys visible to the chunk: 1 .. its last position.

    Chunk j (0-based) ends at cached + (j + 1) * chunk, the last one at context.
    """
    full = span.n_chunks - 1
    return full * span.cached + span.chunk * (full * (full + 1) // 2) + span.context


@traceable
def window_visible_sum(selection: WindowSelection, span: Span) -> Number:
    """Sum over chunks of the keys a banded window kernel loads for the chunk.

    A chunk of L queries ending at e loads keys max(1, e - L + 1 - W + 1) .. e, that is
    min(e, L - 1 + W) keys, plus the sinks that lie before that band.
    """
    w, sinks, c = selection.window, selection.sink_tokens, span.chunk
    full = span.n_chunks - 1
    band_full = sum_arith_clamped(span.cached + c, c, full, 0, c - 1 + w)
    sinks_full = sum_arith_clamped(span.cached + 1 - w, c, full, 0, sinks)

    length, end = span.last_chunk, span.context
    band_last = minimum(end, length - 1 + w)
    sinks_last = minimum(sinks, maximum(end - length + 1 - w, 0))
    return band_full + sinks_full + band_last + sinks_last


@traceable
def visible_sum(selection: object, span: Span) -> Number:
    """Sum over chunks of the keys a chunk-wise kernel loads: a band for windows, else all keys."""
    if isinstance(selection, WindowSelection):
        return window_visible_sum(selection, span)
    return dense_visible_sum(span)
