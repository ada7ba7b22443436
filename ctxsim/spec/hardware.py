"""HardwareProfile: what one accelerator can compute, hold and move, with the source of each number.

Profiles are data: one YAML file per device in ``ctxsim/hw_profiles/`` (shipped inside the package
so that a non-editable install finds them). All values are in base units: FLOP/s, bytes, bytes/s,
seconds, and efficiencies as fractions of the peak.

Conventions, shared by every profile:

- Peak FLOP/s are dense (no 2:4 structured sparsity) matrix-unit rates per dtype.
  ``vector_flops_per_s`` is the non-matrix FP32 rate (CUDA cores, the TPU VPU, CPU SIMD units);
  the time model runs non-matmul FLOPs (softmax, norms, top-k) and fp32 matmuls at that rate.
- ``memory_bytes`` is the device memory visible to software where a measured figure exists
  (nvidia-smi, deviceQuery); otherwise it is the vendor label read as decimal GB, which
  undercounts by about 7% when the label really means GiB.
- Scale-up and scale-out bandwidths are per device, in one direction, aggregated over all links:
  the figure the NCCL bus-bandwidth formulas divide by. Vendor headlines are bidirectional.
- Every efficiency is a prior with its source; calibration replaces them with fitted values and
  records the run in ``provenance``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.load import _read_yaml

PROFILE_DIR = Path(__file__).resolve().parent.parent / "hw_profiles"

# Matrix-unit dtypes a profile may list a peak for. "fp4" covers nvfp4 and mxfp4.
PeakDtype = Literal["tf32", "bf16", "fp16", "fp8", "int8", "fp4"]

# Op kinds that run on the device's compute units and memory (collectives use the link models).
COMPUTE_KINDS: tuple[str, ...] = ("gemm", "attention", "gather", "select", "elementwise", "memory")

# Keys of ``sources`` that every profile must fill: one source per top-level number.
REQUIRED_SOURCES: tuple[str, ...] = (
    "peak_flops",
    "vector_flops_per_s",
    "memory_bytes",
    "memory_bandwidth_bytes_per_s",
    "launch_overhead_s",
)

# Which peak an op's compute dtype runs at, tried in order. A dtype the device has no matrix
# rate for runs at the bf16 rate.
# NOTE: this assumes weight-only kernels (fp8 weights on an A100, fp4 weights on an H100)
# dequantize inside the kernel and multiply in bf16, as w8a16 and w4a16 kernels do.
_PEAK_FALLBACK: dict[str, tuple[str, ...]] = {
    "fp4": ("fp4", "bf16"),
    "nvfp4": ("fp4", "bf16"),
    "mxfp4": ("fp4", "bf16"),
    "fp8": ("fp8", "bf16"),
    "int8": ("int8", "bf16"),
    "fp16": ("fp16", "bf16"),
    "bf16": ("bf16",),
    "tf32": ("tf32", "bf16"),
}

Fraction = Annotated[float, Field(gt=0, le=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Source = Annotated[str, Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KindEfficiency(_Strict):
    """Achievable fractions of peak compute and peak memory bandwidth for one op kind."""

    compute: Fraction = Field(description="Fraction of the dtype's peak FLOP/s this kind reaches.")
    memory: Fraction = Field(description="Fraction of the memory bandwidth this kind reaches.")
    source: Source = Field(description="Where both fractions come from (measurement, paper, or assumption).")


class Efficiency(_Strict):
    """Efficiency priors per op kind; collectives use the scale-up and scale-out efficiencies."""

    gemm: KindEfficiency = Field(description="Dense matmuls (projections, FFN, experts).")
    attention: KindEfficiency = Field(description="Fused attention kernels over contiguous or paged KV.")
    gather: KindEfficiency = Field(description="Attention over gathered, scattered KV rows (sparse selection).")
    select: KindEfficiency = Field(description="Top-k selection and pooling.")
    elementwise: KindEfficiency = Field(description="Norms, activations, rotary embedding, residual adds.")
    memory: KindEfficiency = Field(description="Plain copies and cache writes.")

    def of(self, kind: str) -> KindEfficiency:
        """Return the efficiencies of an op kind (one of COMPUTE_KINDS)."""
        if kind not in COMPUTE_KINDS:
            raise ValueError(f"unknown op kind '{kind}': use one of {', '.join(COMPUTE_KINDS)}")
        return getattr(self, kind)


def _efficiency_at(knots: list[float], values: list[float], size):
    """Efficiency at ``size`` (a number or an array) on a curve given at ``knots``.

    The time of one launch is ``size / efficiency`` (in units of the peak), and it is linear in
    size between knots, so a fixed cost plus a cost per FLOP or byte is exact between knots.
    Above the last knot the efficiency stays at its last value. Below the first knot the time
    stays at the first knot's, so the efficiency falls in proportion to the size. A size of 0
    returns the first knot's value: the op has no such work, and 0 divided by it is 0.
    """
    sizes = np.asarray(size, dtype=np.float64)
    knot_sizes = np.asarray(knots, dtype=np.float64)
    knot_times = knot_sizes / np.asarray(values, dtype=np.float64)
    clamped = np.clip(sizes, knot_sizes[0], knot_sizes[-1])
    times = np.interp(clamped, knot_sizes, knot_times)
    out = np.where(sizes > knot_sizes[-1], values[-1], clamped / times)
    out = np.where((sizes > 0) & (sizes < knot_sizes[0]), values[0] * sizes / knot_sizes[0], out)
    return float(out) if out.ndim == 0 else out


class EfficiencyCurve(_Strict):
    """Efficiencies of one op kind or op name as functions of the work one launch does, fitted by calibration.

    Between knots the time of one launch is linear in its size (a fixed cost plus a cost per
    FLOP or byte), and above the last knot the efficiency stays at the last value. Below the
    first knot the op takes as long as one at the first knot, because a fixed cost dominates
    small ops. Compute size is FLOPs (matmul plus other) per launch, and memory size is bytes
    read plus written per launch.
    """

    compute_size_flops: list[PositiveFloat] = Field(min_length=1, description="Compute knots: FLOPs per launch, increasing.")
    compute: list[Fraction] = Field(min_length=1, description="Fraction of peak FLOP/s at each compute knot.")
    memory_size_bytes: list[PositiveFloat] = Field(min_length=1, description="Memory knots: bytes per launch, increasing.")
    memory: list[Fraction] = Field(min_length=1, description="Fraction of memory bandwidth at each memory knot.")
    source: Source

    @model_validator(mode="after")
    def _knots_match_values(self) -> "EfficiencyCurve":
        for knots, values, name in (
            (self.compute_size_flops, self.compute, "compute"),
            (self.memory_size_bytes, self.memory, "memory"),
        ):
            if len(knots) != len(values):
                raise ValueError(f"{name} has {len(values)} values for {len(knots)} knots: give one value per knot")
            if any(b <= a for a, b in zip(knots, knots[1:])):
                raise ValueError(f"{name} knots must increase strictly: sort them and drop repeats")
        return self

    def compute_at(self, flops_per_launch):
        """Compute efficiency of a launch of ``flops_per_launch`` FLOPs (a number or an array)."""
        return _efficiency_at(self.compute_size_flops, self.compute, flops_per_launch)

    def memory_at(self, bytes_per_launch):
        """Memory efficiency of a launch that moves ``bytes_per_launch`` bytes (a number or an array)."""
        return _efficiency_at(self.memory_size_bytes, self.memory, bytes_per_launch)


class InSwitchReduction(_Strict):
    """All-reduce with the reduction done in the switch (NVLink SHARP, NVLS).

    Each rank sends its buffer once and receives the result once, so the time is
    ``S / (bandwidth * efficiency)`` instead of the ring's ``2 (n-1)/n * S / (bandwidth * efficiency)``.
    """

    min_ranks: Annotated[int, Field(ge=2, strict=True)] = Field(
        description="Smallest group for which the collective library uses it."
    )
    efficiency: Fraction = Field(description="Measured algorithm bandwidth S/t over the unidirectional link bandwidth.")
    source: Source


class ScaleUp(_Strict):
    """The fast domain (NVLink/NVSwitch, xGMI, ICI, HCCS, PCIe) and its collective cost model."""

    topology: Literal["switch", "full_mesh", "torus", "pcie", "host"] = Field(
        description=(
            "switch: any pair at full bandwidth; full_mesh: one link per peer; torus: neighbour links; "
            "pcie: through PCIe switches or the host; host: processes on one machine."
        )
    )
    domain_size: Annotated[int, Field(ge=1, strict=True)] = Field(description="Devices in one scale-up domain.")
    bandwidth_bytes_per_s: PositiveFloat = Field(
        description="Unidirectional bandwidth per device, summed over all its scale-up links."
    )
    p2p_bandwidth_bytes_per_s: PositiveFloat | None = Field(
        None, description="Unidirectional bandwidth of one link to one peer, where it is lower than the total."
    )
    efficiency: Fraction = Field(description="Ring bus bandwidth over the unidirectional bandwidth, large messages.")
    base_latency_s: NonNegativeFloat = Field(description="Fixed latency of one collective.")
    step_latency_s: NonNegativeFloat = Field(description="Latency of one ring step (the alpha of alpha-beta).")
    in_switch_reduction: InSwitchReduction | None = Field(None, description="Switch-side all-reduce, if any.")
    source: Source

    @model_validator(mode="after")
    def _p2p_not_above_total(self) -> "ScaleUp":
        p2p = self.p2p_bandwidth_bytes_per_s
        if p2p is not None and p2p > self.bandwidth_bytes_per_s:
            raise ValueError(
                f"p2p_bandwidth_bytes_per_s {p2p:g} exceeds bandwidth_bytes_per_s {self.bandwidth_bytes_per_s:g}: "
                "p2p is one link, the total is all links"
            )
        return self

    @model_validator(mode="after")
    def _mesh_needs_p2p(self) -> "ScaleUp":
        if self.topology in ("full_mesh", "torus") and self.p2p_bandwidth_bytes_per_s is None:
            raise ValueError(
                f"topology '{self.topology}' needs p2p_bandwidth_bytes_per_s: "
                "a group smaller than the domain only gets the links between its members"
            )
        return self

    @model_validator(mode="after")
    def _in_switch_needs_switch(self) -> "ScaleUp":
        if self.in_switch_reduction is not None and self.topology != "switch":
            raise ValueError(
                f"in_switch_reduction needs topology 'switch', not '{self.topology}': remove it or fix the topology"
            )
        return self

    @model_validator(mode="after")
    def _in_switch_fits_domain(self) -> "ScaleUp":
        isr = self.in_switch_reduction
        if isr is not None and isr.min_ranks > self.domain_size:
            raise ValueError(
                f"in_switch_reduction.min_ranks {isr.min_ranks} exceeds domain_size {self.domain_size}: "
                "lower min_ranks or remove in_switch_reduction"
            )
        return self

    def group_bandwidth_bytes_per_s(self, n_ranks: int) -> float:
        """Unidirectional bandwidth per rank available to a collective of ``n_ranks`` in one domain.

        A switch gives every rank its full bandwidth. In a full mesh each rank reaches its n-1
        peers over n-1 links (an MI300X pair gets 64 GB/s, all 8 get 448 GB/s). On a torus a
        bidirectional ring along one axis uses two links per rank.
        NOTE: torus groups are modelled as one-axis rings. A collective spread over several axes
        is faster by up to the number of axes (scaling-book, sharding chapter).
        """
        p2p = self.p2p_bandwidth_bytes_per_s
        if self.topology == "full_mesh":
            return min(self.bandwidth_bytes_per_s, (n_ranks - 1) * p2p)
        if self.topology == "torus":
            return min(self.bandwidth_bytes_per_s, 2 * p2p)
        return self.bandwidth_bytes_per_s


class ScaleOut(_Strict):
    """The network between scale-up domains (InfiniBand, RoCE, EFA, DCN), one NIC share per device."""

    bandwidth_bytes_per_s: PositiveFloat = Field(description="Unidirectional NIC bandwidth per device.")
    efficiency: Fraction = Field(description="Achieved fraction of the NIC line rate in collectives.")
    base_latency_s: NonNegativeFloat = Field(description="Fixed latency of one collective over the network.")
    step_latency_s: NonNegativeFloat = Field(description="Latency of one ring step over the network.")
    source: Source


class FitResidual(_Strict):
    """How well a calibration fit matches the timings of one op kind it was fitted to."""

    samples: Annotated[int, Field(ge=1, strict=True)] = Field(description="Timed ops of this kind.")
    median_abs_error: NonNegativeFloat = Field(description="Median of |predicted - measured| / measured.")
    max_abs_error: NonNegativeFloat = Field(description="Largest |predicted - measured| / measured.")


class CalibrationRun(_Strict):
    """How ``ctxsim calibrate`` measured: what it timed, how often, and how well the fit matches."""

    base_profile: str = Field(min_length=1, description="Profile the peaks and untimed numbers come from.")
    torch_dtype: str = Field(min_length=1, description="Dtype the reference model ran in.")
    threads: Annotated[int, Field(ge=1, strict=True)] | None = Field(
        None, description="torch intra-op threads on a CPU; null on a GPU."
    )
    clock: str = Field(min_length=1, description="How times were taken: CUDA events, thread CPU time, or wall time.")
    grid: str = Field(min_length=1, description="Name of the shape grid (tiny, quick or full).")
    shapes: list[str] = Field(default_factory=list, description="Every timed layer run and probe.")
    repeats: str = Field(min_length=1, description="Warm-up and timed runs per shape; times are medians.")
    samples: Annotated[int, Field(ge=1, strict=True)] = Field(description="Timed ops the fit used.")
    duration_s: NonNegativeFloat = Field(description="Wall time of the whole calibration.")
    load_average: NonNegativeFloat | None = Field(None, description="1-minute load average at the start (CPU).")
    residuals: dict[str, FitResidual] = Field(default_factory=dict, description="Fit error per op kind.")


class Provenance(_Strict):
    """Where the profile comes from: datasheets, or a calibration run on a named device."""

    kind: Literal["datasheet", "calibration"]
    date: str = Field(min_length=4, description="When the numbers were compiled or measured (ISO date or year-month).")
    device: str | None = Field(None, description="Device the calibration ran on, as the driver names it.")
    software: dict[str, str] = Field(
        default_factory=dict, description="Versions used by a calibration run (torch, CUDA, driver)."
    )
    notes: str = ""
    calibration: CalibrationRun | None = Field(None, description="The measurement and fit of a calibration run.")

    @model_validator(mode="after")
    def _calibration_names_device(self) -> "Provenance":
        if self.kind == "calibration" and (not self.device or not self.software):
            raise ValueError("a calibration provenance needs 'device' and 'software' versions: add both")
        return self


class HardwareProfile(_Strict):
    """One accelerator: peak rates, memory, links, launch overhead and efficiency priors."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$", description="Lowercase profile name, as in --hardware.")
    description: str = Field(min_length=1, description="The device in words: vendor, model, memory, form factor.")
    vendor: str = Field(min_length=1)
    device_type: Literal["gpu", "tpu", "npu", "hpu", "cpu"]
    confidence: Literal["high", "medium", "low"] = Field(
        description="high: vendor datasheets; medium: some numbers secondary or assumed; low: mostly secondary."
    )
    confidence_note: str = Field("", description="Which numbers are uncertain and why.")
    peak_flops: dict[PeakDtype, PositiveFloat] = Field(
        description="Dense matrix-unit peak FLOP/s per dtype (no structured sparsity)."
    )
    vector_flops_per_s: PositiveFloat = Field(description="Non-matrix FP32 peak FLOP/s (vector or CUDA cores).")
    memory_bytes: Annotated[int, Field(gt=0, strict=True)] = Field(description="Device memory in bytes.")
    memory_bandwidth_bytes_per_s: PositiveFloat = Field(description="Peak device-memory bandwidth.")
    launch_overhead_s: NonNegativeFloat = Field(description="Added time per kernel launch.")
    scale_up: ScaleUp
    scale_out: ScaleOut | None = Field(None, description="Network between domains; null when none is typical.")
    efficiency: Efficiency
    efficiency_curves: dict[str, EfficiencyCurve] = Field(
        default_factory=dict,
        description="Fitted efficiency curves per op kind; where present they replace 'efficiency' in op times.",
    )
    efficiency_curves_by_op: dict[
        Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(@(prefill|decode))?$")], EfficiencyCurve
    ] = Field(
        default_factory=dict,
        description=(
            "Fitted efficiency curves per op name (attn.core, ffn.up, ...), or per op name and phase "
            "(attn.core@decode); they take precedence over the kind's, the phase's over the name's."
        ),
    )
    sources: dict[str, Source] = Field(description="Source of each top-level number, keyed by field name.")
    provenance: Provenance

    @model_validator(mode="after")
    def _peak_has_bf16(self) -> "HardwareProfile":
        if "bf16" not in self.peak_flops:
            raise ValueError("peak_flops needs a 'bf16' entry: every profile must run the default activation dtype")
        return self

    @model_validator(mode="after")
    def _every_number_has_source(self) -> "HardwareProfile":
        missing = [key for key in REQUIRED_SOURCES if key not in self.sources]
        if missing:
            raise ValueError(f"sources lacks {', '.join(missing)}: add where each number comes from")
        return self

    @model_validator(mode="after")
    def _sources_name_fields(self) -> "HardwareProfile":
        unknown = sorted(set(self.sources) - set(REQUIRED_SOURCES))
        if unknown:
            raise ValueError(
                f"sources has unknown keys {', '.join(unknown)}: use {', '.join(REQUIRED_SOURCES)} "
                "(scale_up, scale_out and efficiencies carry their own 'source')"
            )
        return self

    @model_validator(mode="after")
    def _curves_name_kinds(self) -> "HardwareProfile":
        unknown = sorted(set(self.efficiency_curves) - set(COMPUTE_KINDS))
        if unknown:
            raise ValueError(f"efficiency_curves has unknown kinds {', '.join(unknown)}: use {', '.join(COMPUTE_KINDS)}")
        return self

    @model_validator(mode="after")
    def _uncertain_profile_says_why(self) -> "HardwareProfile":
        if self.confidence != "high" and not self.confidence_note.strip():
            raise ValueError(f"confidence '{self.confidence}' needs a confidence_note: say which numbers are uncertain")
        return self

    # --- lookups used by the time model ----------------------------------------------------

    def peak_flops_for(self, dtype: str) -> float:
        """Peak matmul FLOP/s for an op's compute dtype (fp32 runs on the vector units)."""
        if dtype == "fp32":
            return self.vector_flops_per_s
        for key in _PEAK_FALLBACK.get(dtype, ()):
            if key in self.peak_flops:
                return self.peak_flops[key]
        known = ", ".join(["fp32", *_PEAK_FALLBACK])
        raise ValueError(f"unknown compute dtype '{dtype}': use one of {known}")

    def _fitted(self, kind: str, op_name: str | None, regime: str, size, phase: str | None = None):
        """Efficiency from the fitted curves, or None without any curve.

        The most specific curve is used up to its largest knot: the op name and phase's
        (``attn.core@decode``), then the op name's, then the kind's. Above the largest knot of
        every specific curve, or where the op has none, the kind's curve applies.
        """
        candidates = []
        if op_name is not None:
            if phase is not None:
                candidates.append(self.efficiency_curves_by_op.get(f"{op_name}@{phase}"))
            candidates.append(self.efficiency_curves_by_op.get(op_name))
        candidates = [c for c in candidates if c is not None]
        kind_curve = self.efficiency_curves.get(kind)
        if kind_curve is not None:
            candidates.append(kind_curve)
        if not candidates:
            return None
        if len(candidates) == 1:
            return getattr(candidates[0], f"{regime}_at")(size)
        # NOTE: a name's (or name and phase's) curve is fitted only to the sizes its own ops were
        # timed at. Above them the next more general curve, fitted to more ops, extrapolates less far.
        size_key = "compute_size_flops" if regime == "compute" else "memory_size_bytes"
        out = np.asarray(getattr(candidates[-1], f"{regime}_at")(size), dtype=np.float64)
        for curve in reversed(candidates[:-1]):
            largest = getattr(curve, size_key)[-1]
            out = np.where(np.asarray(size) > largest, out, getattr(curve, f"{regime}_at")(size))
        return float(out) if out.ndim == 0 else out

    def compute_efficiency(
        self, kind: str, flops_per_launch=None, op_name: str | None = None, phase: str | None = None
    ):
        """Compute efficiency of an op: its fitted curve at ``flops_per_launch`` when the profile
        has one (and a size is given), else the kind's constant efficiency."""
        if flops_per_launch is not None:
            fitted = self._fitted(kind, op_name, "compute", flops_per_launch, phase)
            if fitted is not None:
                return fitted
        return self.efficiency.of(kind).compute

    def memory_efficiency(
        self, kind: str, bytes_per_launch=None, op_name: str | None = None, phase: str | None = None
    ):
        """Memory efficiency of an op: its fitted curve at ``bytes_per_launch`` when the profile
        has one (and a size is given), else the kind's constant efficiency."""
        if bytes_per_launch is not None:
            fitted = self._fitted(kind, op_name, "memory", bytes_per_launch, phase)
            if fitted is not None:
                return fitted
        return self.efficiency.of(kind).memory

    def ridge_point(self, dtype: str = "bf16", kind: str = "gemm") -> float:
        """FLOPs per byte above which an op of ``kind`` in ``dtype`` is compute-bound."""
        eff = self.efficiency.of(kind)
        compute = self.peak_flops_for(dtype) * eff.compute
        return compute / (self.memory_bandwidth_bytes_per_s * eff.memory)


def hardware_names() -> list[str]:
    """Names of the shipped hardware profiles, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def hardware_from_dict(data: object, source: str = "") -> HardwareProfile:
    """Validate a hardware profile mapping, raising SpecError with a one-line message."""
    if not isinstance(data, dict):
        raise SpecError(f"{source or 'hardware profile'}: expected a mapping of profile keys, got {type(data).__name__}")
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


@lru_cache(maxsize=64)
def _load_shipped(name: str) -> HardwareProfile:
    profile = hardware_from_dict(_read_yaml(PROFILE_DIR / f"{name}.yaml"), source=f"hardware profile {name}")
    if profile.name != name:
        raise SpecError(f"hardware profile {name}: name '{profile.name}' differs from the file name; make them equal")
    return profile


def load_hardware(name_or_path: str | Path) -> HardwareProfile:
    """Load a hardware profile by name (``h100-sxm``) or from a YAML file path.

    Raises SpecError with a one-line message for an unknown name, a missing file, malformed YAML,
    or an invalid profile.
    """
    text = str(name_or_path)
    if text in hardware_names():
        return _load_shipped(text)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpecError(f"hardware file not found: {path}; check the path")
        return hardware_from_dict(_read_yaml(path), source=str(path))
    names = ", ".join(hardware_names())
    raise SpecError(f"unknown hardware '{text}': use a profile ({names}) or a path to a .yaml file")
