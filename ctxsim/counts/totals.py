"""Phase totals, KV memory and activation peak over grids of context x batch, without Op lists.

``estimate`` builds a few hundred op records per call; over an array of contexts each record
costs a dozen numpy passes. A sweep needs only sums of those records, and every op field is a
polynomial with integer coefficients in a few quantities of the phase:

- ``B``: the batch; ``T``: new tokens per sequence; ``m``: forward passes (prefill chunks);
- the span sums of ``ctxsim.counts.keys`` (keys attended, keys loaded per chunk, MSA blocks),
  one symbol per distinct call, for example ``selected_key_sum(dsa_selection, span)``;
- the routed-expert weight reads of ``ffn.expert_weight_reads``, one symbol per MoE FFN.

``Totals`` finds those polynomials by running the real op builders (``model_ops``) once per
phase on a traced span whose sums return symbols (``keys.traceable``), so no formula is written
twice. Evaluating them then costs one pass per span sum plus one matrix product, and the batch
axis costs a multiply-add per point. Python int inputs give exact ints, equal to ``estimate``;
float64 arrays agree with it to about 1e-15 relative.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ctxsim.counts.arith import minimum
from ctxsim.counts.conventions import ACTIVATION_BYTES
from ctxsim.counts.estimate import _check_contexts, model_ops
from ctxsim.counts.keys import Span, Tracer, decode_span, make_span
from ctxsim.counts.memory import KV_COMPONENTS, check_kv_dtype, kv_memory
from ctxsim.counts.phase import PhaseRun
from ctxsim.counts.report import OP_KINDS, Number, Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.load import load_model
from ctxsim.spec.model import ModelSpec
from ctxsim.spec.workload import Workload

QUANTITIES = ("flops", "matmul_flops", "bytes_read", "bytes_written")

Monomial = tuple[str, ...]  # sorted symbol names; () is the constant term


class TraceError(RuntimeError):
    """An op formula did something to a traced count that a polynomial cannot represent."""


# ---------------------------------------------------------------------------------------------
# Polynomials with integer coefficients


class Poly:
    """A polynomial with Python int coefficients over named symbols: ``{monomial: coefficient}``."""

    __slots__ = ("terms",)

    def __init__(self, terms: dict[Monomial, int]):
        self.terms = terms

    @classmethod
    def symbol(cls, name: str) -> Poly:
        return cls({(name,): 1})

    @staticmethod
    def _lift(value: Any) -> Poly:
        if isinstance(value, Poly):
            return value
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return Poly({(): int(value)} if value else {})
        raise TraceError(f"a traced count met {type(value).__name__} {value!r}; only ints keep it exact")

    def __add__(self, other: Any) -> Poly:
        other = self._lift(other)
        terms = dict(self.terms)
        for mono, coef in other.terms.items():
            total = terms.get(mono, 0) + coef
            if total:
                terms[mono] = total
            else:
                terms.pop(mono, None)
        return Poly(terms)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly({mono: -coef for mono, coef in self.terms.items()})

    def __sub__(self, other: Any) -> Poly:
        return self + (-self._lift(other))

    def __rsub__(self, other: Any) -> Poly:
        return self._lift(other) + (-self)

    def __mul__(self, other: Any) -> Poly:
        other = self._lift(other)
        terms: dict[Monomial, int] = {}
        for mono_a, coef_a in self.terms.items():
            for mono_b, coef_b in other.terms.items():
                mono = tuple(sorted(mono_a + mono_b))
                total = terms.get(mono, 0) + coef_a * coef_b
                if total:
                    terms[mono] = total
                else:
                    terms.pop(mono, None)
        return Poly(terms)

    __rmul__ = __mul__

    def __bool__(self) -> bool:
        raise TraceError("an op formula branched on a traced count; trace only formulas without such branches")

    def __repr__(self) -> str:
        parts = [f"{coef}*{'*'.join(mono) or '1'}" for mono, coef in sorted(self.terms.items())]
        return " + ".join(parts) or "0"


def _poly(value: Any) -> Poly:
    return Poly._lift(value)


# ---------------------------------------------------------------------------------------------
# Traced spans and phase runs


@dataclass(slots=True)
class TracedSum:
    """One distinct call of a span sum met while tracing, and the symbol that stands for it.

    ``args`` are the call's arguments, with ``SPAN`` in place of the traced span and ``RUN`` in
    place of the traced run. A sum that takes the run also depends on the batch (``needs_batch``).
    """

    symbol: str
    fn: Callable[..., Number]
    args: tuple
    kwargs: dict[str, Any]
    needs_batch: bool

    def evaluate(self, span: Span, run: PhaseRun | None) -> Number:
        real = []
        for arg in self.args:
            if arg is SPAN:
                arg = span
            elif arg is RUN:
                arg = run
            real.append(arg)
        return self.fn(*real, **self.kwargs)


SPAN = object()
RUN = object()


class SymbolicSpan(Tracer):
    """A Span whose new tokens and chunk count are symbols and whose sums are recorded as symbols."""

    __slots__ = ("sums", "_index")

    new_tokens = Poly.symbol("T")
    n_chunks = Poly.symbol("m")

    def __init__(self) -> None:
        self.sums: list[TracedSum] = []
        self._index: dict[Any, Poly] = {}

    def trace_sum(self, fn: Callable[..., Number], args: tuple, kwargs: dict[str, Any]) -> Poly:
        template = []
        for arg in args:
            if arg is self:
                arg = SPAN
            elif isinstance(arg, TracedRun):
                arg = RUN
            template.append(arg)
        needs_batch = RUN in template
        key = (fn, tuple(_hashable(a) for a in template), tuple(sorted(kwargs.items())))
        if key not in self._index:
            symbol = f"{fn.__name__}#{len(self.sums)}"
            self.sums.append(TracedSum(symbol, fn, tuple(template), dict(kwargs), needs_batch))
            self._index[key] = Poly.symbol(symbol)
        return self._index[key]


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


class TracedRun(PhaseRun, Tracer):
    """A PhaseRun with the symbolic batch ``B`` and a SymbolicSpan; its sums are the span's."""

    __slots__ = ()

    def trace_sum(self, fn: Callable[..., Number], args: tuple, kwargs: dict[str, Any]) -> Poly:
        return self.span.trace_sum(fn, args, kwargs)


def _run(spec: ModelSpec, workload: Workload, phase: str, span: Any, batch: Any, kv_dtype: str, cls=PhaseRun) -> PhaseRun:
    return cls(
        phase,
        batch,
        span,
        spec.d_model,
        spec.weight_dtype,
        spec.expert_weight_dtype or spec.weight_dtype,
        kv_dtype,
        workload.execution,
        workload.mla_mode,
        spec.vocab_dtype,
    )


@dataclass(slots=True)
class PhaseTrace:
    """The ops of one phase with polynomial fields, and the span sums their symbols stand for.

    ``ops`` are the model's ops (``model_ops``); ``extra_ops`` come from the caller's builder,
    such as the collectives of a parallel plan, and count in the phase totals only.
    """

    phase: str
    ops: list[Op]
    extra_ops: list[Op]
    sums: list[TracedSum]


ExtraOps = Callable[[PhaseRun], list[Op]]

_OP_FIELDS = ("matmul_flops", "other_flops", "bytes_read", "bytes_written", "weight_bytes_read",
              "kv_bytes_read", "kv_bytes_written")


def trace_phase(spec: ModelSpec, workload: Workload, phase: str, kv_dtype: str, extra_ops: ExtraOps | None = None) -> PhaseTrace:
    """Run the op builders of ``phase`` on a traced span and batch (see the module docstring).

    ``extra_ops(run)`` builds more ops of the phase from the same traced run.
    """
    span = SymbolicSpan()
    run = _run(spec, workload, phase, span, Poly.symbol("B"), kv_dtype, TracedRun)
    try:
        ops = model_ops(spec, run)
        extra = extra_ops(run) if extra_ops is not None else []
    except TypeError as err:
        raise TraceError(f"tracing the {phase} ops of {spec.name} failed: {err}") from err
    for op in ops + extra:
        for name in _OP_FIELDS:
            setattr(op, name, _poly(getattr(op, name)))
    return PhaseTrace(phase, ops, extra, span.sums)


# ---------------------------------------------------------------------------------------------
# Symbol values on a real span

# Largest context whose span sums fit int64 exactly: every sum is at most about N^2 / 2 times a
# small factor, and 2^31 squared is 2^62. Integer arrays make the sums' floor divisions about
# 30x faster than float64 ones; longer contexts fall back to float64.
INT64_MAX_CONTEXT = 2**31 - 1


class _Symbols:
    """Values of one trace's symbols on one real span, each computed on first use.

    Scalar mode (``grid`` False) gives Python ints. Grid mode gives float64 arrays: context
    symbols (T, m, batch-free sums) as columns of the n contexts, batch symbols (B and sums that
    take the run) broadcastable to [contexts x batches].
    """

    def __init__(self, totals: Totals, trace: PhaseTrace, span: Span, batch: Number, grid: bool):
        self.totals = totals
        self.trace = trace
        self.span = span
        self.batch = batch
        self.grid = grid
        self.sums = {s.symbol: s for s in trace.sums}
        self.context_values: dict[str, Number] = {}
        self.batch_values: dict[str, Number] = {}
        self._grid_run: PhaseRun | None = None

    def with_batch(self, batch: Number) -> _Symbols:
        """Return these symbols for another batch, sharing the context symbols computed so far."""
        other = _Symbols(self.totals, self.trace, self.span, batch, self.grid)
        other.context_values = self.context_values
        return other

    def __getitem__(self, symbol: str) -> Number:
        if symbol in self.context_values:
            return self.context_values[symbol]
        if symbol in self.batch_values:
            return self.batch_values[symbol]
        value = self._compute(symbol)
        traced = self.sums.get(symbol)
        if symbol == "B" or (traced is not None and traced.needs_batch):
            self.batch_values[symbol] = value
        else:
            self.context_values[symbol] = value
        return value

    def _compute(self, symbol: str) -> Number:
        span = self.span
        if symbol == "B":
            return self.batch[None, :] if self.grid else self.batch
        if symbol in ("T", "m"):
            value = span.new_tokens if symbol == "T" else span.n_chunks
            return _column(value, span) if self.grid else value
        traced = self.sums[symbol]
        if not self.grid:
            return traced.evaluate(span, self._run(span, self.batch))
        if not traced.needs_batch:
            return _column(traced.evaluate(span, None), span)
        return np.asarray(traced.evaluate(self._grid_span(), self._run_on_grid()), dtype=np.float64)

    def _run(self, span: Span, batch: Number) -> PhaseRun:
        totals = self.totals
        return _run(totals.spec, totals.workload, self.trace.phase, span, batch, totals.kv_dtype)

    def _grid_span(self) -> Span:
        """Return the span with its arrays as [n x 1] columns, which broadcast against the batch row."""
        fields = (self.span.cached, self.span.context, self.span.chunk, self.span.n_chunks, self.span.last_chunk)
        return Span(*(v.reshape(-1, 1) if isinstance(v, np.ndarray) else v for v in fields))

    def _run_on_grid(self) -> PhaseRun:
        if self._grid_run is None:
            self._grid_run = self._run(self._grid_span(), self.batch[None, :])
        return self._grid_run


def _column(value: Number, span: Span) -> np.ndarray:
    """``value`` as a float64 array with one entry per context of ``span``."""
    n = np.size(span.context)
    return np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (n,))


# ---------------------------------------------------------------------------------------------
# Fast evaluation of many polynomials


class _Compiled:
    """Named polynomials, each split into batch parts times context-only polynomials.

    A batch part is a product of batch symbols (``B`` and sums that take the run), and () for
    terms free of the batch. The context-only polynomials of all (name, batch part) columns are
    evaluated together as one matrix product: [context monomials x contexts] then
    [columns x monomials] @ that, which costs one pass per monomial.
    """

    def __init__(self, polys: dict[str, Poly], batch_symbols: set[str]):
        self.names = list(polys)
        self.columns: list[tuple[str, Monomial]] = []
        self.parts: dict[tuple[str, Monomial], dict[Monomial, int]] = {}
        index: dict[Monomial, int] = {}
        for name, poly in polys.items():
            for mono, coef in poly.terms.items():
                batch_part = tuple(s for s in mono if s in batch_symbols)
                context_part = tuple(s for s in mono if s not in batch_symbols)
                key = (name, batch_part)
                if key not in self.parts:
                    self.parts[key] = {}
                    self.columns.append(key)
                self.parts[key][context_part] = coef
                index.setdefault(context_part, len(index))
        self.monomials = list(index)
        self.coef = np.zeros((len(self.columns), len(index)))
        for j, key in enumerate(self.columns):
            for mono, coef in self.parts[key].items():
                self.coef[j, index[mono]] = float(coef)

    def linear_in(self, symbol: str) -> bool:
        """Return whether every term of every name has ``symbol`` as its whole batch part."""
        return all(batch_part == (symbol,) for _, batch_part in self.columns)

    def evaluate(self, symbols: _Symbols, shape: tuple[int, ...]) -> dict[str, Number]:
        """Values of every name: exact ints in scalar mode, float64 arrays of ``shape`` on a grid."""
        if not shape:
            return self._evaluate_exact(symbols)

        n_contexts = shape[0]
        basis = np.empty((len(self.monomials), n_contexts))
        for i, mono in enumerate(self.monomials):
            row = basis[i]
            if not mono:
                row.fill(1.0)
                continue
            np.copyto(row, symbols[mono[0]])
            for symbol in mono[1:]:
                row *= symbols[symbol]
        reduced = self.coef @ basis  # [columns x contexts]

        out: dict[str, Number] = {}
        for j, (name, batch_part) in enumerate(self.columns):
            term = reduced[j][:, None]
            for symbol in batch_part:
                term = term * symbols[symbol]
            if name in out:
                out[name] += term
            elif term.shape == shape:
                # Row j of ``reduced`` (or a new product) serves no other column, so it is kept as is.
                out[name] = term
            else:
                out[name] = np.broadcast_to(term, shape).copy()
        for name in self.names:
            if name not in out:
                out[name] = np.zeros(shape)
        return out

    def _evaluate_exact(self, symbols: _Symbols) -> dict[str, Number]:
        out: dict[str, Number] = {name: 0 for name in self.names}
        for (name, batch_part), part in self.parts.items():
            for mono, coef in part.items():
                term = coef
                for symbol in batch_part + mono:
                    term = term * symbols[symbol]
                out[name] += term
        return out


def _drop_dominated(polys: list[Poly]) -> list[Poly]:
    """Drop each polynomial that another one bounds term by term.

    Every symbol is a count and so non-negative. A polynomial whose every coefficient is at most
    another's never exceeds it, so the largest of the set is the largest of what remains.
    """
    kept: list[Poly] = []
    for i, poly in enumerate(polys):
        dominated = False
        for j, other in enumerate(polys):
            if i == j:
                continue
            bounded = all(coef <= other.terms.get(mono, 0) for mono, coef in poly.terms.items())
            if bounded and (poly.terms != other.terms or j < i):
                dominated = True
                break
        if not dominated:
            kept.append(poly)
    return kept


# ---------------------------------------------------------------------------------------------
# Totals of one model and workload


def _phase_polys(trace: PhaseTrace, by_kind: bool) -> dict[str, Poly]:
    phase = trace.phase
    polys = {f"{phase}_{q}": Poly({}) for q in QUANTITIES}
    kinds: dict[str, Poly] = {}
    for op in trace.ops + trace.extra_ops:
        count = op.count
        flops = (op.matmul_flops + op.other_flops) * count
        polys[f"{phase}_flops"] += flops
        polys[f"{phase}_matmul_flops"] += op.matmul_flops * count
        polys[f"{phase}_bytes_read"] += op.bytes_read * count
        polys[f"{phase}_bytes_written"] += op.bytes_written * count
        if by_kind:
            moved = (op.bytes_read + op.bytes_written) * count
            for name, value in ((f"{phase}_{op.kind}_flops", flops), (f"{phase}_{op.kind}_bytes_moved", moved)):
                kinds[name] = kinds.get(name, Poly({})) + value
    ordered = {name: kinds[name] for name in kind_columns(phase) if name in kinds}
    return {**polys, **ordered}


def kind_columns(phase: str) -> list[str]:
    """Names of the per-op-kind outputs of a phase, in OP_KINDS order."""
    return [f"{phase}_{kind}_{unit}" for kind in OP_KINDS for unit in ("flops", "bytes_moved")]


def kv_columns() -> list[str]:
    """Names of the KV-cache outputs."""
    per_sequence = ["kv_bytes_per_sequence"] + [f"kv_{c}_bytes_per_sequence" for c in KV_COMPONENTS]
    return per_sequence + ["kv_bytes_per_device"]


class Totals:
    """Phase totals, KV memory, weights and activation peak of one model and workload template.

    The template's ``context`` and ``batch`` are only defaults: ``evaluate`` takes grids of
    them. Build once (a few ms), evaluate many times (a dashboard slider, a heatmap). Outputs:

    - ``{phase}_flops``, ``{phase}_matmul_flops``, ``{phase}_bytes_read``, ``{phase}_bytes_written``
      for each phase of the workload (``decode`` is one decode step of the batch);
    - with ``by_kind``, ``{phase}_{kind}_flops`` and ``{phase}_{kind}_bytes_moved`` (bytes read
      plus written) for each op kind of ``OP_KINDS`` that the model's ops have;
    - ``kv_bytes_per_sequence``, ``kv_{main,indexer,window}_bytes_per_sequence`` and
      ``kv_bytes_per_device`` (the batch's);
    - ``weights_bytes`` and ``activation_peak_bytes``, as ``estimate`` counts them.

    ``extra_ops(run)``, given a traced PhaseRun, returns ops to add to each phase's totals (for
    example a plan's collectives). Their fields must be integer polynomials in ``run.batch``,
    ``run.rows`` and ``run.forwards``; the activation peak leaves them out, as ``estimate`` does.
    """

    def __init__(
        self, model: ModelSpec | str, workload: Workload, *, by_kind: bool = False, extra_ops: ExtraOps | None = None
    ):
        self.spec = model if isinstance(model, ModelSpec) else load_model(model)
        self.workload = workload
        self.kv_dtype = workload.kv_dtype or self.spec.kv_dtype
        check_kv_dtype(self.spec, self.kv_dtype)
        self.phases = ("prefill", "decode") if workload.phase == "both" else (workload.phase,)
        self.weights_bytes = self.spec.weight_bytes()

        # The activation peak comes from prefill ops even for a decode-only workload, as in estimate.
        self.traces = {p: trace_phase(self.spec, workload, p, self.kv_dtype, extra_ops) for p in ("prefill", "decode")}
        self._phase_sets = {
            phase: _Compiled(_phase_polys(self.traces[phase], by_kind), self._batch_symbols(self.traces[phase]))
            for phase in self.phases
        }
        prefill = self.traces["prefill"]
        activations = _drop_dominated([op.activation_bytes for op in prefill.ops])
        self._activations = _Compiled({f"op{i}": p for i, p in enumerate(activations)}, self._batch_symbols(prefill))

    @staticmethod
    def _batch_symbols(trace: PhaseTrace) -> set[str]:
        return {"B"} | {s.symbol for s in trace.sums if s.needs_batch}

    @property
    def names(self) -> list[str]:
        """Output names of ``evaluate``, in order."""
        phase_names = [name for phase in self.phases for name in self._phase_sets[phase].names]
        return phase_names + kv_columns() + ["weights_bytes", "activation_peak_bytes"]

    def evaluate(self, context: Number | Iterable[int] | None = None, batch: Number | Iterable[int] | None = None) -> dict[str, Number]:
        """Compute every output at each point of the grid ``context`` x ``batch``.

        Ints give exact ints, equal to ``estimate``. An array or list of either gives float64
        arrays of shape ``(len(context), len(batch))``; a scalar batch with an array of contexts
        gives ``(len(context),)``. Both default to the workload's.
        """
        contexts = _check_contexts(self.workload.context if context is None else context, self.workload)
        batches = _check_batches(self.workload.batch if batch is None else batch)
        if not isinstance(contexts, np.ndarray) and not isinstance(batches, np.ndarray):
            return self._evaluate(contexts, batches, ())

        ctx = np.atleast_1d(np.asarray(contexts, dtype=np.float64))
        bat = np.atleast_1d(np.asarray(batches, dtype=np.float64))
        out = self._evaluate(ctx, bat, (ctx.size, bat.size))
        if np.ndim(batches) == 0 and np.ndim(contexts) == 1:
            out = {name: value[:, 0] for name, value in out.items()}
        return out

    # --- evaluation ------------------------------------------------------------------------

    def _evaluate(self, context: Number, batch: Number, shape: tuple[int, ...]) -> dict[str, Number]:
        grid = bool(shape)
        # Span sums run on int64 contexts where they cannot overflow (see INT64_MAX_CONTEXT).
        sums_context = context
        if grid and context.max() <= INT64_MAX_CONTEXT:
            sums_context = context.astype(np.int64)

        out: dict[str, Number] = {}
        prefill_span = make_span(self.workload.cached_context, sums_context, self.workload.chunk_size)
        prefill_symbols = _Symbols(self, self.traces["prefill"], prefill_span, batch, grid)
        for phase in self.phases:
            if phase == "prefill":
                symbols = prefill_symbols
            else:
                symbols = _Symbols(self, self.traces["decode"], decode_span(sums_context), batch, grid)
            out.update(self._phase_sets[phase].evaluate(symbols, shape))

        out.update(self._kv(context, batch, shape))
        out["weights_bytes"] = np.full(shape, float(self.weights_bytes)) if grid else self.weights_bytes
        out["activation_peak_bytes"] = self._activation_peak(sums_context, batch, shape, prefill_symbols)
        return out

    def _kv(self, context: Number, batch: Number, shape: tuple[int, ...]) -> dict[str, Number]:
        kv = kv_memory(self.spec, context, self.kv_dtype, self.workload.kv_policy, self.workload.page_size, 1)
        per_sequence = {"kv_bytes_per_sequence": kv.bytes_per_sequence}
        for component in KV_COMPONENTS:
            per_sequence[f"kv_{component}_bytes_per_sequence"] = kv.by_component[component]
        if not shape:
            return {**per_sequence, "kv_bytes_per_device": kv.bytes_per_sequence * batch}
        out = {}
        for name, value in per_sequence.items():
            column = np.asarray(value, dtype=np.float64).reshape(-1, 1)
            out[name] = column if column.shape == shape else np.broadcast_to(column, shape).copy()
        out["kv_bytes_per_device"] = out["kv_bytes_per_sequence"] * batch[None, :]
        return out

    def _activation_peak(self, context: Number, batch: Number, shape: tuple[int, ...], prefill_symbols: _Symbols) -> Number:
        """Compute the activations of the largest prefill chunk: the residual stream plus the largest op.

        As in ``estimate``, the chunk has min(chunk_size, new tokens) queries and ends at the
        context. Without chunking it is the whole prefill, so the prefill's symbol values are reused.
        """
        workload = self.workload
        new_tokens = context - workload.cached_context
        if workload.chunk_size is None:
            length, base = new_tokens, prefill_symbols
        else:
            length = minimum(workload.chunk_size, new_tokens)
            base = _Symbols(self, self.traces["prefill"], make_span(context - length, context), batch, bool(shape))
        stream_per_sequence = length * self.spec.d_model * ACTIVATION_BYTES

        compiled = self._activations
        if not shape:
            values = compiled.evaluate(base, shape)
            return batch * stream_per_sequence + max(values.values(), default=0)

        stream = np.asarray(stream_per_sequence, dtype=np.float64).reshape(-1, 1)
        if compiled.linear_in("B"):
            # Every op's activation is B times a context-only polynomial, so the largest op is
            # found once per context and scaled by each batch.
            values = compiled.evaluate(base.with_batch(np.ones(1)), (shape[0], 1))
            largest = np.zeros((shape[0], 1))
            for value in values.values():
                np.maximum(largest, value, out=largest)
            return (stream + largest) * batch[None, :]

        values = compiled.evaluate(base, shape)
        largest = np.zeros(shape)
        for value in values.values():
            np.maximum(largest, value, out=largest)
        return stream * batch[None, :] + largest


def _check_batches(batch: Any) -> Number:
    """Validate a batch: a positive int, or a one-dimensional array or list of them."""
    if isinstance(batch, (np.ndarray, list, tuple)):
        values = np.asarray(batch, dtype=np.float64)
        if values.ndim != 1 or values.size == 0:
            raise SpecError("batch array must be one-dimensional and non-empty: pass e.g. [1, 8, 64]")
        if not np.all(values == np.floor(values)) or values.min() < 1:
            raise SpecError(f"batch values must be whole numbers of at least 1, got {values.tolist()[:5]}: fix the list")
        return values
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise SpecError(f"invalid batch {batch!r}: use a positive int or a list of them")
    return int(batch)
