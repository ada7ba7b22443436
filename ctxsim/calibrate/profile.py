"""Turn a fit into a calibrated HardwareProfile, and write profiles without leaving partial files.

The fit measures slowness against the base profile's peaks. With ``peaks="base"`` (GPUs, whose
base profile contains datasheet peaks) the calibrated profile keeps those peaks unless the fastest
timed GEMM or the largest timed copy exceeds them. With ``peaks="measured"`` (CPUs, whose base
profile is a generic placeholder) the bf16 peak becomes the fastest GEMM's rate and the
bandwidth the largest copy's, so that the efficiencies read as fractions of what this machine
reached. The vector rate moves with the bf16 peak. Links (scale-up, scale-out) are copied from the base profile: calibration on one
device does not measure them.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ctxsim.calibrate.fit import Curve, CurveFit, Fit, Sample
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import (
    COMPUTE_KINDS,
    CalibrationRun,
    EfficiencyCurve,
    FitResidual,
    HardwareProfile,
    KindEfficiency,
    Provenance,
    hardware_from_dict,
)

# Smallest efficiency written to a profile: a knot that the samples never bind can fit to any
# small value, and a profile's efficiencies must be positive.
MIN_EFFICIENCY = 1e-9


@dataclass(frozen=True)
class DeviceInfo:
    """The device a calibration ran on, as the CLI found it."""

    name: str
    device_type: str  # HardwareProfile.device_type: "cpu" or "gpu"
    memory_bytes: int
    software: dict[str, str]


def measured_rates(samples: list[Sample]) -> tuple[float | None, float | None]:
    """Return the best matmul rate of the timed GEMMs and the rate of the largest memory copy.

    These are the machine's ceilings as measured: FLOP/s of the fastest GEMM, and bytes per
    second of the largest copy probe (a STREAM-like copy, too large for the caches when the grid
    is quick or full).
    """
    gemm = [s.matmul_flops / s.time_s for s in samples if s.kind == "gemm" and s.matmul_flops > 0]
    copies = [s for s in samples if s.kind == "memory" and s.bytes > 0]
    largest = max(copies, key=lambda s: s.bytes) if copies else None
    return (max(gemm) if gemm else None), (largest.bytes / largest.time_s if largest else None)


def peak_scales(base: HardwareProfile, samples: list[Sample], peaks: str) -> tuple[float, float]:
    """Return the factors for the compute peaks and the memory bandwidth of the calibrated profile.

    ``peaks="measured"`` sets the bf16 peak to the fastest GEMM and the bandwidth to the largest
    copy. ``"base"`` keeps the base profile's numbers unless a measurement exceeds them.
    """
    matmul, bandwidth = measured_rates(samples)
    scales = []
    for measured, peak in ((matmul, base.peak_flops_for("bf16")), (bandwidth, base.memory_bandwidth_bytes_per_s)):
        if measured is None:
            scales.append(1.0)
        elif peaks == "measured":
            scales.append(measured / peak)
        else:
            scales.append(max(1.0, measured / peak))
    return scales[0], scales[1]


def _efficiencies(curve: Curve, scale: float) -> list[float]:
    # NOTE: a knot faster than the measured ceiling is clipped to efficiency 1. That happens for
    # the smallest ops, whose time is mostly the launch overhead, so the rest fits poorly.
    return [float(np.clip(1.0 / (g * scale), MIN_EFFICIENCY, 1.0)) for g in curve.slowness]


def _saturated(curve: Curve, scale: float) -> float:
    """Efficiency at the largest knot that the samples bind (the last knot when none does)."""
    effs = _efficiencies(curve, scale)
    supported = np.flatnonzero(curve.supported)
    return effs[int(supported[-1])] if supported.size else effs[-1]


def _curve_entries(
    curve_fit: CurveFit, prior: KindEfficiency, prior_name: str, scales: tuple[float, float], device: str
) -> tuple[KindEfficiency, EfficiencyCurve]:
    """Build the profile's curve for one kind or op name, and the constant efficiency it saturates at."""
    error = f"{len(curve_fit.errors)} timed ops, median |error| of this curve {curve_fit.median_abs_error:.1%}"
    parts = {}
    notes = []
    for regime, scale, size_key, prior_value in (
        ("compute", scales[0], "compute_size_flops", prior.compute),
        ("memory", scales[1], "memory_size_bytes", prior.memory),
    ):
        curve: Curve | None = getattr(curve_fit, regime)
        if curve is None:
            # The timed ops have no such work: keep the base prior.
            parts[size_key], parts[regime] = [1.0], [prior_value]
            parts[f"{regime}_scalar"] = prior_value
            notes.append(f"{regime} is the prior of {prior_name} (the timed ops have none)")
        else:
            parts[size_key] = [float(k) for k in curve.knots]
            parts[regime] = _efficiencies(curve, scale)
            parts[f"{regime}_scalar"] = _saturated(curve, scale)
    source = f"fitted by ctxsim calibrate on {device}: {error}"
    if notes:
        source += "; " + "; ".join(notes)
    scalar = KindEfficiency(
        compute=parts.pop("compute_scalar"),
        memory=parts.pop("memory_scalar"),
        source=source + "; value at the largest fitted size (see efficiency_curves)",
    )
    return scalar, EfficiencyCurve(**parts, source=source)


def profile_name(out: Path) -> str:
    """Derive a valid profile name from the output file name: lowercase, other characters as '-'."""
    name = re.sub(r"[^a-z0-9.-]+", "-", out.stem.lower()).strip("-.")
    return name or "calibrated"


def calibrated_profile(
    base: HardwareProfile,
    fit: Fit,
    samples: list[Sample],
    *,
    name: str,
    device: DeviceInfo,
    date: str,
    run: CalibrationRun,
    peaks: str,
) -> HardwareProfile:
    """Build the base profile with fitted efficiencies, launch overhead, device facts and provenance."""
    compute_scale, memory_scale = peak_scales(base, samples, peaks)
    data = base.model_dump(mode="json")
    scales = (compute_scale, memory_scale)
    efficiency = data["efficiency"]
    curves = {}
    for kind in COMPUTE_KINDS:
        if kind not in fit.kinds:
            efficiency[kind]["source"] = f"prior of {base.name}: not calibrated (no timed ops of this kind)"
            continue
        scalar, curve = _curve_entries(fit.kinds[kind], base.efficiency.of(kind), base.name, scales, device.name)
        efficiency[kind] = scalar.model_dump(mode="json")
        curves[kind] = curve.model_dump(mode="json")
    curves_by_op = {}
    for op_name, curve_fit in fit.ops.items():
        prior = base.efficiency.of(curve_fit.kind)
        _, curve = _curve_entries(curve_fit, prior, base.name, scales, device.name)
        curves_by_op[op_name] = curve.model_dump(mode="json")

    sources = data["sources"]
    if compute_scale != 1.0:
        data["peak_flops"] = {k: v * compute_scale for k, v in data["peak_flops"].items()}
        data["vector_flops_per_s"] *= compute_scale
        sources["peak_flops"] = (
            f"[M] fastest GEMM timed by ctxsim calibrate on {device.name} ({base.name} peaks x {compute_scale:.4g})"
        )
        sources["vector_flops_per_s"] = f"[M] {base.name} vector rate x {compute_scale:.4g}, the factor of peak_flops"
    if memory_scale != 1.0:
        data["memory_bandwidth_bytes_per_s"] *= memory_scale
        sources["memory_bandwidth_bytes_per_s"] = (
            f"[M] largest tensor copy timed by ctxsim calibrate on {device.name} ({base.name} bandwidth x {memory_scale:.4g})"
        )
    data["memory_bytes"] = device.memory_bytes
    sources["memory_bytes"] = "[M] reported by the operating system (CPU) or the CUDA driver (GPU)"
    data["launch_overhead_s"] = fit.launch_overhead_s
    sources["launch_overhead_s"] = f"[M] ctxsim calibrate on {device.name}: median time per op of back-to-back one-element adds"

    worst = max((float(np.median(np.abs(e))) for e in fit.errors.values()), default=0.0)
    data.update(
        name=name,
        description=f"{device.name}, calibrated by ctxsim calibrate ({run.torch_dtype})",
        vendor=base.vendor if base.vendor != "generic" else device.name.split()[0],
        device_type=device.device_type,
        confidence="medium",
        confidence_note=(
            f"Efficiencies fitted to reference-model op timings on this device (median |error| per kind up to "
            f"{worst:.0%}); links are the {base.name} profile's, not measured."
        ),
        efficiency=efficiency,
        efficiency_curves=curves,
        efficiency_curves_by_op=curves_by_op,
        sources=sources,
        provenance=Provenance(
            kind="calibration",
            date=date,
            device=device.name,
            software=device.software,
            notes=f"Base profile {base.name}; peaks: {peaks}.",
            calibration=run,
        ).model_dump(mode="json"),
    )
    return hardware_from_dict(data, source="calibrated profile")


def residuals(fit: Fit) -> dict[str, FitResidual]:
    """Errors per kind, each op predicted by the curve the time model uses for it."""
    return {
        kind: FitResidual(
            samples=len(errors),
            median_abs_error=float(np.median(np.abs(errors))),
            max_abs_error=float(np.max(np.abs(errors))),
        )
        for kind, errors in fit.errors.items()
    }


# ---------------------------------------------------------------------------------------------
# Writing


def check_output(path: Path, force: bool) -> None:
    """Reject an output path before any measuring: wrong suffix, missing folder, or an existing file."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise SpecError(f"invalid output path {path}: use a .yaml file name")
    if not path.parent.is_dir():
        raise SpecError(f"folder not found: {path.parent}; create it or choose another --out")
    if path.exists() and not force:
        raise SpecError(f"{path} already exists: pass --force to overwrite it or choose another --out")


def profile_yaml(profile: HardwareProfile) -> str:
    header = (
        f"# Hardware profile calibrated by 'ctxsim calibrate' on {profile.provenance.device}, {profile.provenance.date}.\n"
        "# Efficiencies are fitted to reference-model timings; provenance.calibration records the run.\n"
    )
    return header + yaml.safe_dump(profile.model_dump(mode="json"), sort_keys=False, width=120)


def write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder.

    The file appears whole or not at all: the temporary file is synced and then renamed (with
    ``force``) or hard-linked into place (without, which fails if ``path`` exists, so an existing
    file is never replaced). Any exception, KeyboardInterrupt included, removes the temporary file.
    """
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if force:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path)
        _sync_folder(path.parent)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _link_new(temporary: str, path: Path) -> None:
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise SpecError(f"{path} already exists: pass --force to overwrite it or choose another --out") from None
    except OSError:
        # NOTE: on file systems without hard links the existence check and the rename are two
        # steps, so a file created in between would be replaced.
        if path.exists():
            raise SpecError(f"{path} already exists: pass --force to overwrite it or choose another --out") from None
        os.replace(temporary, path)


def _sync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_profile(profile: HardwareProfile, path: Path, force: bool) -> None:
    write_atomic(path, profile_yaml(profile).encode(), force)
