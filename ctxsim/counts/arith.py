"""Exact integer arithmetic that also runs on float64 arrays of context lengths.

Every count in ``ctxsim.counts`` is written once with these helpers. Given Python ints they
return Python ints (exact at any size, so nothing overflows at 10M tokens); given a numpy
array they return a float64 array. Python's ``//`` and ``%`` already work on both, so only
minimum, maximum and rounding need a helper.

Float64 is exact for integers below 2**53 (about 9e15). Key and token sums stay below that
up to contexts of about 100M tokens, so array results match the int path to the last bit
until they are multiplied by per-key costs; see ``sum_arith_clamped`` for the order of work.
"""

from __future__ import annotations

import math

import numpy as np

from ctxsim.counts.report import Number


def minimum(a: Number, b: Number) -> Number:
    """Element-wise minimum of two counts."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.minimum(a, b)
    return a if a <= b else b


def maximum(a: Number, b: Number) -> Number:
    """Element-wise maximum of two counts."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.maximum(a, b)
    return a if a >= b else b


def clamp(x: Number, lo: Number, hi: Number) -> Number:
    """``x`` limited to ``lo .. hi`` (requires lo <= hi)."""
    return minimum(maximum(x, lo), hi)


def ceil_div(a: Number, b: Number) -> Number:
    """Ceiling of ``a / b`` for integer-valued ``a`` and positive ``b``."""
    return -(-a // b)


def triangle(n: Number) -> Number:
    """``1 + 2 + ... + n`` = n(n+1)/2; 0 for n <= 0 is the caller's job."""
    return n * (n + 1) // 2


def sum_min(x: Number, cap: Number) -> Number:
    """``sum(min(t, cap) for t in 1..x)`` for x >= 0: a causal window or top-k of ``cap`` keys."""
    y = minimum(x, cap)
    return triangle(y) + (x - y) * cap


def sum_ceil_div(x: Number, b: int) -> Number:
    """``sum(ceil(t / b) for t in 1..x)`` for x >= 0: blocks of ``b`` keys seen by each query."""
    q = x // b
    r = x % b
    return b * triangle(q) + r * (q + 1)


def sum_partial_block(x: Number, b: int) -> Number:
    """``sum(t - b * (ceil(t / b) - 1) for t in 1..x)``: keys in each query's own, partly filled block."""
    q = x // b
    r = x % b
    return triangle(b) * q + triangle(r)


def sum_arith_clamped(first: Number, step: Number, n: Number, lo: Number, hi: Number) -> Number:
    """``sum(clamp(first + j * step, lo, hi) for j in 0..n-1)`` for step > 0 and lo <= hi.

    Terms below ``lo`` count ``lo``, terms at or above ``hi`` count ``hi``, the rest themselves.
    """
    n_below = clamp(ceil_div(lo - first, step), 0, n)
    n_under_hi = clamp(ceil_div(hi - first, step), 0, n)
    middle = (n_under_hi - n_below) * first + step * (
        n_under_hi * (n_under_hi - 1) // 2 - n_below * (n_below - 1) // 2
    )
    return n_below * lo + middle + (n - n_under_hi) * hi


def round_half_up(x: Number) -> Number:
    """Nearest integer (halves up): a Python int for a float, a float64 array for an array."""
    if isinstance(x, np.ndarray):
        return np.floor(x + 0.5)
    return math.floor(x + 0.5)


def is_array(x: object) -> bool:
    return isinstance(x, np.ndarray)
