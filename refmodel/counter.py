"""Exact counter of the work the reference model does, under the op names of ctxsim.counts.

Every region of the forward pass runs inside ``counter.op(name)``; what runs there is charged to
(phase, layer index, op name):

- matmul FLOPs from the shapes of the tensors actually multiplied, 2 per multiply-accumulate
  (``linear``, ``einsum``). Products over ragged key sets (attention scores, index scores) are
  charged per valid (query, key) pair of the mask or index list the softmax or top-k uses,
  because a production kernel skips masked and padding entries while torch computes the padded
  rectangle.
- non-matmul FLOPs per element, with the constants of ctxsim.counts.conventions.
- bytes read and written in the spec's dtypes: weights in the weight dtype, activations at
  ACTIVATION_BYTES per element, cache records at their record size.

``TorchMatmulWatch`` is an independent check of the GEMM counts: a dispatch mode that charges
torch's own FLOP formulas (torch.utils.flop_counter) for every aten matmul to the same key.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from math import prod

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ctxsim.counts.conventions import ACTIVATION_BYTES
from ctxsim.spec.dtypes import weight_bytes


@dataclass
class Tally:
    """Work of one op, summed over the chunks and calls charged to it."""

    matmul_flops: int = 0
    other_flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    torch_matmul_flops: int = 0
    extras: dict[str, int] = field(default_factory=dict)


# (phase, layer index or None outside the layer stack, op name)
Key = tuple[str, "int | None", str]


class Counter:
    """Collects Tallies; disabled counters skip all bookkeeping (setup runs, benchmarks)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tallies: dict[Key, Tally] = {}
        self.phase = "prefill"
        self.layer: int | None = None
        self.name: str | None = None

    @contextmanager
    def op(self, name: str):
        previous = self.name
        self.name = name
        try:
            yield
        finally:
            self.name = previous

    @contextmanager
    def in_layer(self, index: int | None):
        previous = self.layer
        self.layer = index
        try:
            yield
        finally:
            self.layer = previous

    def tally(self) -> Tally:
        assert self.name is not None, "work charged outside any counter.op(name) region"
        key = (self.phase, self.layer, self.name)
        found = self.tallies.get(key)
        if found is None:
            found = self.tallies[key] = Tally()
        return found

    def add(self, matmul_flops: int = 0, other_flops: int = 0, bytes_read: int = 0, bytes_written: int = 0) -> None:
        if not self.enabled:
            return
        t = self.tally()
        t.matmul_flops += int(matmul_flops)
        t.other_flops += int(other_flops)
        t.bytes_read += int(bytes_read)
        t.bytes_written += int(bytes_written)

    def add_extra(self, key: str, value: int) -> None:
        """Record a named side quantity (for example distinct experts touched) on the current op."""
        if not self.enabled:
            return
        extras = self.tally().extras
        extras[key] = extras.get(key, 0) + int(value)


def activation_bytes(t: torch.Tensor) -> int:
    """Bytes of an activation tensor at the counted activation dtype (bf16)."""
    return t.numel() * ACTIVATION_BYTES


def linear(
    counter: Counter,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    weight_dtype: str,
    in_bytes: int | None = None,
    out_bytes: int | None = None,
) -> torch.Tensor:
    """``x @ weight.T + bias``, charged as one GEMM: reads weights and ``x``, writes the output.

    A bias add is one non-matmul FLOP per output element. ``in_bytes`` and ``out_bytes`` replace
    the bf16 activation sizes of ``x`` and of the output (cache records in, fp32 logits out).
    """
    y = F.linear(x, weight, bias)
    if counter.enabled:
        rows = x.numel() // x.shape[-1]
        out_features, in_features = weight.shape
        n_weights = weight.numel() + (0 if bias is None else bias.numel())
        counter.add(
            matmul_flops=2 * rows * in_features * out_features,
            other_flops=0 if bias is None else y.numel(),
            bytes_read=weight_bytes(n_weights, weight_dtype) + (activation_bytes(x) if in_bytes is None else in_bytes),
            bytes_written=activation_bytes(y) if out_bytes is None else out_bytes,
        )
    return y


def einsum_flops(equation: str, a: torch.Tensor, b: torch.Tensor) -> int:
    """FLOPs of a two-operand einsum: 2 x the product of the sizes of all distinct indices."""
    inputs = equation.split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for subscripts, tensor in zip(inputs, (a, b)):
        assert len(subscripts) == tensor.dim(), (equation, tuple(tensor.shape))
        for letter, size in zip(subscripts, tensor.shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return 2 * prod(sizes.values())


def einsum(counter: Counter, equation: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A two-operand einsum charged with ``einsum_flops`` (bytes are charged by the caller)."""
    out = torch.einsum(equation, a, b)
    if counter.enabled:
        counter.add(matmul_flops=einsum_flops(equation, a, b))
    return out


class TorchMatmulWatch(TorchDispatchMode):
    """Charge torch's FLOP formula of every aten matmul to the counter's current key."""

    def __init__(self, counter: Counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None and self.counter.enabled and self.counter.name is not None:
            self.counter.tally().torch_matmul_flops += int(formula(*args, **kwargs, out_val=out))
        return out
