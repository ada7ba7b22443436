"""One phase of a workload (a prefill, or a decode step) and builders for its op records."""

from __future__ import annotations

from dataclasses import dataclass

from ctxsim.counts.conventions import ACTIVATION_BYTES, RESIDUAL_FLOPS_PER_ELEMENT, RMSNORM_FLOPS_PER_ELEMENT
from ctxsim.counts.keys import Span
from ctxsim.counts.names import OP_KIND
from ctxsim.counts.report import Number, Op
from ctxsim.spec.dtypes import weight_bytes


@dataclass(slots=True)
class PhaseRun:
    """Inputs shared by every op of one phase: the queries, the batch and the dtypes.

    ``rows`` is the number of query tokens in the phase over the whole batch. ``forwards`` is the
    number of forward passes (prefill chunks), and each pass reads every weight once.
    """

    phase: str
    batch: int
    span: Span
    d_model: int
    weight_dtype: str
    expert_dtype: str
    kv_dtype: str
    execution: str
    mla_mode: str
    vocab_dtype: str

    @property
    def rows(self) -> Number:
        return self.batch * self.span.new_tokens

    @property
    def forwards(self) -> Number:
        return self.span.n_chunks


def gemm_op(
    name: str,
    run: PhaseRun,
    layer_kind: str | None,
    count: int,
    rows: Number,
    d_in: int,
    d_out: int,
    *,
    heads: int = 1,
    bias: bool = False,
    other_flops: Number = 0,
    in_bytes: Number | None = None,
    out_bytes: Number | None = None,
    kv_bytes_read: Number = 0,
    kv_bytes_written: Number = 0,
    weight_reads: Number | None = None,
    weight_dtype: str | None = None,
) -> Op:
    """Build the op of a matmul of ``rows`` tokens through ``heads`` matrices of d_in x d_out each.

    It reads its weights once per forward pass (``weight_reads`` times) and its input activation,
    and writes its output activation plus ``kv_bytes_written`` of cache. ``in_bytes`` and
    ``out_bytes`` replace the default bf16 activation sizes (``kv_bytes_read`` is part of
    ``in_bytes`` when given). ``weight_dtype`` replaces the run's weight dtype (the LM head).
    """
    dtype = run.weight_dtype if weight_dtype is None else weight_dtype
    per_matrix = d_in * d_out
    n_weights = heads * per_matrix + (heads * d_out if bias else 0)
    reads = run.forwards if weight_reads is None else weight_reads
    weights = weight_bytes(n_weights, dtype) * reads
    read_act = rows * heads * d_in * ACTIVATION_BYTES if in_bytes is None else in_bytes
    written = rows * heads * d_out * ACTIVATION_BYTES if out_bytes is None else out_bytes
    if bias:
        other_flops = other_flops + rows * heads * d_out
    return Op(
        name,
        "gemm",
        run.phase,
        count,
        2 * rows * heads * per_matrix,
        other_flops,
        weights + read_act,
        written + kv_bytes_written,
        layer_kind,
        dtype,
        weights,
        kv_bytes_read,
        kv_bytes_written,
    )


def elementwise_op(
    name: str,
    run: PhaseRun,
    layer_kind: str | None,
    count: int,
    other_flops: Number,
    bytes_read: Number,
    bytes_written: Number,
) -> Op:
    """Build an op with no weights and no matmul (norms, rope, residual adds, activations, pooling, top-k)."""
    return Op(name, OP_KIND[name], run.phase, count, 0, other_flops, bytes_read, bytes_written, layer_kind)


def norm_op(name: str, run: PhaseRun, layer_kind: str | None, count: int, rows: Number) -> Op:
    """Build the op of an RMSNorm over d_model for ``rows`` tokens.

    NOTE: the norm's own weight (d_model values) is left out of bytes, as it is of parameters.
    """
    elements = rows * run.d_model
    act = elements * ACTIVATION_BYTES
    return elementwise_op(name, run, layer_kind, count, RMSNORM_FLOPS_PER_ELEMENT * elements, act, act)


def residual_op(name: str, run: PhaseRun, layer_kind: str | None, count: int) -> Op:
    """Build the residual add of the sub-layer output to the stream: it reads both and writes the sum."""
    elements = run.rows * run.d_model
    act = elements * ACTIVATION_BYTES
    return elementwise_op(name, run, layer_kind, count, RESIDUAL_FLOPS_PER_ELEMENT * elements, 2 * act, act)
