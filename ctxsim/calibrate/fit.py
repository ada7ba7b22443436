"""Fit efficiency curves per op kind to measured op times, with the time model's own formula.

A sample is one timed op: its exact counts, its forward passes (``launches``) and its median
time. For an op of kind K on a profile with peaks P (per dtype), V (vector FP32) and W (memory
bandwidth), the time model predicts

    compute_s = (matmul_flops / P + other_flops / V) * g_c(flops per launch)
    memory_s  = (bytes_read + bytes_written) / W * g_m(bytes per launch)
    time_s    = max(compute_s, memory_s) + launches * launch_overhead_s

where ``g = 1 / efficiency`` is the slowness. Each curve is given at knots: the smallest and
largest timed size and the powers of ten between them. Between knots the launch time ``s g(s)``
is linear in the size s, the shape that ``EfficiencyCurve`` evaluates, so a fixed cost plus a
cost per FLOP or byte is exact. Below the first knot the launch time stays at the first knot's.

Curves are fitted per op kind, from all the kind's samples, and per op name for every name with
at least MIN_OP_SAMPLES samples. The time model uses a name's curve up to its largest knot, and
the kind's curve above it and for other ops of the kind (for example MoE experts when only
dense MLPs were timed). Ops of one kind differ in fixed cost and in efficiency: on a CPU a decode step's rotary
embedding takes ten times as long as its residual add, although both are small elementwise ops.
A name with MIN_OP_SAMPLES samples in each phase also gets a curve per phase (``attn.core@decode``),
used before the name's: a decode core of one query row runs at another rate than a prefill core of
the same FLOPs.

The launch overhead is measured directly (back-to-back tiny ops) and held fixed. For each curve
the knot values start at the lower envelope of the slowness each sample implies, because no op
runs faster than its kind's curve allows in either regime. A Levenberg-Marquardt loop then
minimises the Huber loss of the log errors, which are relative errors. The Huber loss limits the
pull of a sample that another process slowed down. A small penalty on the jump between
neighbouring knots ties knots with few samples to their neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ctxsim.counts.names import OP_KIND
from ctxsim.spec.hardware import HardwareProfile

# Weight of the penalty on (log g_k - log g_{k+1})^2, against squared log errors of samples.
SMOOTHNESS = 0.001
# Quantile of the implied log slowness near a knot that starts the fit (the lower envelope,
# a little above the minimum so that one fast outlier does not set it).
ENVELOPE_QUANTILE = 0.1
MAX_ITERATIONS = 200
# Powers of ten closer than this (in decades) to the smallest or largest size are not knots.
KNOT_MARGIN = 0.25
# Log error above which the Huber loss grows linearly instead of quadratically.
HUBER_DELTA = 0.2
# Samples an op name needs for a curve of its own; names with fewer use their kind's curve.
# An op name timed in both phases with this many samples in each also gets a curve per phase.
MIN_OP_SAMPLES = 4
PHASES = ("prefill", "decode")


def phase_key(name: str, phase: str) -> str:
    """Key of the curve of one op name in one phase, as in ``efficiency_curves_by_op``."""
    return f"{name}@{phase}"


@dataclass(frozen=True)
class Sample:
    """One timed op: exact counts of one run, forward passes, and the median measured time."""

    kind: str
    name: str
    matmul_flops: float
    other_flops: float
    bytes: float
    launches: int
    time_s: float
    dtype: str = "bf16"
    shape: str = ""
    # "prefill" or "decode". When empty, run_phase reads it from the layer run's label in ``shape``.
    phase: str = ""

    @property
    def flops(self) -> float:
        return self.matmul_flops + self.other_flops

    @property
    def run_phase(self) -> str:
        """The phase of the layer run the op came from, or "" for a probe."""
        if self.phase:
            return self.phase
        words = self.shape.split()
        return next((w for w in words if w in PHASES), "")


@dataclass
class Curve:
    """Slowness (1 / efficiency, against the fit's peaks) at knots of size per launch."""

    knots: np.ndarray
    slowness: np.ndarray
    # Whether some sample bound by this regime lies next to each knot; knots without one carry
    # only an upper bound on their slowness.
    supported: np.ndarray

    def slowness_at(self, sizes: np.ndarray) -> np.ndarray:
        """Slowness at each size per launch, interpolated as the time model does."""
        return _time_basis(sizes, self.knots) @ (self.knots * self.slowness) / sizes


@dataclass
class CurveFit:
    """The fitted compute and memory curves of one op kind or op name, and its samples' errors."""

    key: str
    kind: str
    compute: Curve | None
    memory: Curve | None
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def median_abs_error(self) -> float:
        return float(np.median(np.abs(self.errors)))

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.errors)))


@dataclass
class Fit:
    """Curves per kind and per op name, the fixed launch overhead, and the errors per kind."""

    launch_overhead_s: float
    kinds: dict[str, CurveFit]
    ops: dict[str, CurveFit] = field(default_factory=dict)
    # Relative errors of every sample of each kind, each predicted by the curve the time model
    # would use (its name's, else its kind's).
    errors: dict[str, np.ndarray] = field(default_factory=dict)

    def predict(self, samples: list["Sample"], profile: HardwareProfile) -> np.ndarray:
        """Predicted times of ``samples`` (all of fitted kinds) with the curves the time model uses.

        As in ``HardwareProfile``, an op name's curve applies up to its largest knot and the
        kind's curve above it.
        """
        data = _Data.of(samples, profile)
        terms = []
        for regime, x_s, sizes in (("compute", data.compute_s, data.flops), ("memory", data.memory_s, data.bytes)):
            term = np.zeros(len(samples))
            for i, sample in enumerate(samples):
                if x_s[i] > 0:
                    term[i] = x_s[i] * self._slowness(sample, regime, sizes[i])
            terms.append(term)
        return np.maximum(*terms) + data.launches * self.launch_overhead_s

    def _slowness(self, sample: "Sample", regime: str, size: float) -> float:
        kind_curve = getattr(self.kinds[sample.kind], regime)
        specific = []
        for key in (phase_key(sample.name, sample.run_phase), sample.name):
            named = self.ops.get(key)
            if named is not None and getattr(named, regime) is not None:
                specific.append(getattr(named, regime))
        # The most specific curve up to its largest knot, then the next; the kind's above all.
        curve = next((c for c in specific if size <= c.knots[-1]), None)
        if curve is None:
            curve = kind_curve if kind_curve is not None else specific[-1]
        return float(curve.slowness_at(np.array([size]))[0])


# ---------------------------------------------------------------------------------------------
# Arrays of one kind's samples


@dataclass
class _Data:
    compute_s: np.ndarray  # matmul and other FLOPs at the peaks (efficiency 1)
    memory_s: np.ndarray  # bytes at the full bandwidth
    flops: np.ndarray  # per launch
    bytes: np.ndarray  # per launch
    launches: np.ndarray
    time_s: np.ndarray

    @classmethod
    def of(cls, samples: list[Sample], profile: HardwareProfile) -> "_Data":
        launches = np.array([s.launches for s in samples], dtype=np.float64)
        compute = [s.matmul_flops / profile.peak_flops_for(s.dtype) + s.other_flops / profile.vector_flops_per_s for s in samples]
        return cls(
            compute_s=np.array(compute),
            memory_s=np.array([s.bytes for s in samples]) / profile.memory_bandwidth_bytes_per_s,
            flops=np.array([s.flops for s in samples]) / launches,
            bytes=np.array([s.bytes for s in samples]) / launches,
            launches=launches,
            time_s=np.array([s.time_s for s in samples]),
        )


def _time_basis(sizes: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Weights ``[n, K]`` that give the time-like product size x slowness at each size.

    ``h(s) = s g(s)`` is linear in s between knots, so a fixed cost plus a cost per FLOP or byte
    is exact between knots. Below the first knot h stays at the first knot's value (the time of
    a launch stops falling), and above the last knot g stays at its last value (h grows as s).
    """
    n, k = len(sizes), len(knots)
    weights = np.zeros((n, k))
    rows = np.arange(n)
    below = sizes <= knots[0]
    above = sizes >= knots[-1]
    weights[below, 0] = 1.0
    weights[above & ~below, k - 1] = sizes[above & ~below] / knots[-1]
    inside = ~below & ~above
    if k > 1 and inside.any():
        j = np.clip(np.searchsorted(knots, sizes[inside], side="right") - 1, 0, k - 2)
        t = (sizes[inside] - knots[j]) / (knots[j + 1] - knots[j])
        weights[rows[inside], j] = 1.0 - t
        weights[rows[inside], j + 1] = t
    return weights


def _knots(sizes: np.ndarray) -> np.ndarray:
    """Knots at the smallest and largest size and at the powers of ten between them.

    A power of ten within KNOT_MARGIN decades of either end is left out, so that every knot has
    samples on both sides or at it.
    """
    low, high = float(sizes.min()), float(sizes.max())
    if high <= low * 10**KNOT_MARGIN:
        return np.array([low]) if high == low else np.array([low, high])
    inner = 10.0 ** np.arange(math.ceil(math.log10(low) + KNOT_MARGIN), math.floor(math.log10(high) - KNOT_MARGIN) + 1)
    return np.concatenate([[low], inner, [high]])


def _terms(data: _Data, compute: Curve | None, memory: Curve | None) -> tuple[np.ndarray, np.ndarray]:
    tc = np.zeros_like(data.time_s)
    tm = np.zeros_like(data.time_s)
    if compute is not None:
        has = data.compute_s > 0
        tc[has] = data.compute_s[has] * compute.slowness_at(data.flops[has])
    if memory is not None:
        has = data.memory_s > 0
        tm[has] = data.memory_s[has] * memory.slowness_at(data.bytes[has])
    return tc, tm


def _predict(data: _Data, compute: Curve | None, memory: Curve | None, launch_s: float) -> np.ndarray:
    tc, tm = _terms(data, compute, memory)
    return np.maximum(tc, tm) + data.launches * launch_s


# ---------------------------------------------------------------------------------------------
# Fitting one kind


def _envelope(implied: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Start value of each knot: a low quantile of the implied log slowness of its nearest samples."""
    k = weights.shape[1]
    nearest = np.argmax(weights, axis=1)
    start = np.full(k, np.nan)
    for knot in range(k):
        near = implied[nearest == knot]
        if near.size:
            start[knot] = np.quantile(near, ENVELOPE_QUANTILE)
    filled = np.flatnonzero(~np.isnan(start))
    for knot in np.flatnonzero(np.isnan(start)):
        start[knot] = start[filled[np.argmin(np.abs(filled - knot))]]
    return start


@dataclass
class _Regime:
    """One regime (compute or memory) of one kind during the fit.

    A sample's term is ``design @ g`` for the knot slowness g: its time at efficiency 1 over its
    size, times the size x slowness interpolated at its size (``_time_basis``).
    """

    x_s: np.ndarray  # time at efficiency 1, per sample (0 where the sample has no such work)
    sizes: np.ndarray  # work per launch
    knots: np.ndarray
    weights: np.ndarray  # [n, K] interpolation weights, zero rows where x_s == 0
    design: np.ndarray  # [n, K]

    @classmethod
    def of(cls, x_s: np.ndarray, sizes: np.ndarray) -> "_Regime | None":
        has = x_s > 0
        if not has.any():
            return None
        knots = _knots(sizes[has])
        weights = np.zeros((len(x_s), len(knots)))
        weights[has] = _time_basis(sizes[has], knots)
        design = np.zeros_like(weights)
        design[has] = (x_s[has] / sizes[has])[:, None] * weights[has] * knots[None, :]
        return cls(x_s, sizes, knots, weights, design)

    def term(self, theta: np.ndarray) -> np.ndarray:
        return self.design @ np.exp(theta)

    def jacobian(self, theta: np.ndarray) -> np.ndarray:
        return self.design * np.exp(theta)[None, :]

    def start(self, work_s: np.ndarray) -> np.ndarray:
        has = self.x_s > 0
        implied = np.log(work_s[has] / self.x_s[has])
        return _envelope(implied, self.weights[has])


def _penalty_rows(n_knots: int) -> np.ndarray:
    rows = np.zeros((max(n_knots - 1, 0), n_knots))
    for k in range(n_knots - 1):
        rows[k, k], rows[k, k + 1] = 1.0, -1.0
    return rows * math.sqrt(SMOOTHNESS)


def _fit_regimes(regimes: list[_Regime], data: _Data, launch_s: float) -> list[np.ndarray]:
    """Levenberg-Marquardt on the knot values (log slowness) of the regimes of one kind."""
    fixed = data.launches * launch_s
    # Time left for the work once the launches are paid. A sample measured faster than its
    # launches alone still gets a positive share, so that its log stays finite.
    work_s = np.maximum(data.time_s - fixed, 0.05 * data.time_s)
    thetas = [r.start(work_s) for r in regimes]
    sizes = [len(t) for t in thetas]
    penalty = np.zeros((0, sum(sizes)))
    column = 0
    for size in sizes:
        block = np.zeros((max(size - 1, 0), sum(sizes)))
        block[:, column : column + size] = _penalty_rows(size)
        penalty = np.vstack([penalty, block])
        column += size

    def evaluate(theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Huber cost, and the residuals and Jacobian weighted for one IRLS step."""
        parts = np.split(theta, np.cumsum(sizes)[:-1])
        terms = [r.term(p) for r, p in zip(regimes, parts)]
        stacked = np.vstack(terms)
        binding = np.argmax(stacked, axis=0)
        pred = stacked.max(axis=0) + fixed
        jac = np.zeros((len(pred), len(theta)))
        column = 0
        for index, (regime, term) in enumerate(zip(regimes, terms)):
            rows = binding == index
            part = np.split(theta, np.cumsum(sizes)[:-1])[index]
            jac[rows, column : column + sizes[index]] = regime.jacobian(part)[rows] / pred[rows][:, None]
            column += sizes[index]
        errors = np.log(pred / data.time_s)
        size = np.abs(errors)
        huber = np.where(size <= HUBER_DELTA, 0.5 * errors**2, HUBER_DELTA * (size - 0.5 * HUBER_DELTA))
        smooth = penalty @ theta
        cost = float(huber.sum() + 0.5 * smooth @ smooth)
        weight = np.sqrt(np.where(size <= HUBER_DELTA, 1.0, HUBER_DELTA / np.maximum(size, 1e-300)))
        r = np.concatenate([weight * errors, smooth])
        return cost, r, np.vstack([weight[:, None] * jac, penalty])

    theta = np.concatenate(thetas)
    cost, r, jac = evaluate(theta)
    damping = 1e-3
    for _ in range(MAX_ITERATIONS):
        normal = jac.T @ jac
        step = np.linalg.solve(normal + damping * (np.diag(np.diag(normal)) + 1e-9 * np.eye(len(theta))), -jac.T @ r)
        trial = theta + step
        cost_trial, r_trial, jac_trial = evaluate(trial)
        if cost_trial < cost:
            converged = cost - cost_trial < 1e-10 * max(cost, 1e-30)
            theta, r, jac, cost = trial, r_trial, jac_trial, cost_trial
            damping = max(damping / 3, 1e-9)
            if converged:
                break
        else:
            damping *= 4
            if damping > 1e9:
                break
    return np.split(theta, np.cumsum(sizes)[:-1])


def _supported(regime: _Regime, binding_rows: np.ndarray) -> np.ndarray:
    return regime.weights[binding_rows].sum(axis=0) > 0.25


def fit_curves(key: str, samples: list[Sample], profile: HardwareProfile, launch_s: float) -> CurveFit:
    """Fit the compute and memory curves of one op kind or op name to its samples (all of one kind)."""
    data = _Data.of(samples, profile)
    compute = _Regime.of(data.compute_s, data.flops)
    memory = _Regime.of(data.memory_s, data.bytes)
    regimes = [r for r in (compute, memory) if r is not None]
    if not regimes:
        raise ValueError(f"the samples of '{key}' have neither FLOPs nor bytes: nothing to fit")
    thetas = _fit_regimes(regimes, data, launch_s)

    terms = [r.term(t) for r, t in zip(regimes, thetas)]
    binding = np.argmax(np.vstack(terms), axis=0)
    curves = [Curve(r.knots, np.exp(t), _supported(r, binding == i)) for i, (r, t) in enumerate(zip(regimes, thetas))]
    compute_curve = curves.pop(0) if compute is not None else None
    memory_curve = curves.pop(0) if memory is not None else None
    pred = _predict(data, compute_curve, memory_curve, launch_s)
    return CurveFit(key, samples[0].kind, compute_curve, memory_curve, (pred - data.time_s) / data.time_s)


def fit_samples(samples: list[Sample], profile: HardwareProfile, launch_overhead_s: float) -> Fit:
    """Fit every kind and every op name with enough samples, with the launch overhead held fixed."""
    if not samples:
        raise ValueError("no timed ops to fit")
    fit = Fit(launch_overhead_s, {})
    for kind in dict.fromkeys(s.kind for s in samples):
        fit.kinds[kind] = fit_curves(kind, [s for s in samples if s.kind == kind], profile, launch_overhead_s)
    # Probes that are not ops of the counts (the memory copy) only inform their kind's curve.
    for name in dict.fromkeys(s.name for s in samples if s.name in OP_KIND):
        named = [s for s in samples if s.name == name]
        if len(named) >= MIN_OP_SAMPLES:
            fit.ops[name] = fit_curves(name, named, profile, launch_overhead_s)
        by_phase = {phase: [s for s in named if s.run_phase == phase] for phase in PHASES}
        # NOTE: decode cores (one query row against every key) and prefill cores of the same
        # FLOPs run at different rates, so a name timed in both phases gets a curve per phase.
        if all(len(group) >= MIN_OP_SAMPLES for group in by_phase.values()):
            for phase, group in by_phase.items():
                key = phase_key(name, phase)
                fit.ops[key] = fit_curves(key, group, profile, launch_overhead_s)
    measured = np.array([s.time_s for s in samples])
    errors = (fit.predict(samples, profile) - measured) / measured
    for kind in fit.kinds:
        fit.errors[kind] = errors[[i for i, s in enumerate(samples) if s.kind == kind]]
    return fit
