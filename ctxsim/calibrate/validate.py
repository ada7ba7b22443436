"""Compare measured layer times with the time model's predictions, and summarise the error.

The prediction of a case is the sum of the layer's op times that ``ctxsim.estimate`` and
``estimate_time`` give for the one-layer ModelSpec of its LayerShape. The model-level embedding,
final norm and LM head are left out, because the measured run is one layer.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxsim.calibrate.shapes import LayerShape
from ctxsim.counts.estimate import estimate
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import HardwareProfile
from ctxsim.time.phases import estimate_time


def predict_layer_s(shape: LayerShape, profile: HardwareProfile) -> float:
    """Predicted time of one layer run of ``shape``: the sum of its layer ops' times."""
    report = estimate(shape.spec(), shape.workload())
    times = estimate_time(report, profile)
    return float(sum(t.total_s for t in times.ops if t.layer_kind is not None and t.phase == shape.phase))


@dataclass(frozen=True)
class Case:
    """One held-out layer run: measured and predicted time."""

    shape: LayerShape
    measured_s: float
    predicted_s: float

    @property
    def error(self) -> float:
        """Relative error of the prediction, (predicted - measured) / measured."""
        return (self.predicted_s - self.measured_s) / self.measured_s

    def to_dict(self) -> dict[str, Any]:
        s = self.shape
        return {
            "design": s.design,
            "sparse": s.sparse,
            "d_model": s.d_model,
            "phase": s.phase,
            "context": s.context,
            "chunk_size": s.chunk,
            "batch": s.batch,
            "measured_s": self.measured_s,
            "predicted_s": self.predicted_s,
            "error": self.error,
        }


def mape(cases: list[Case]) -> float | None:
    """Mean absolute percentage error as a fraction (0.1 is 10%), or None without cases."""
    if not cases:
        return None
    return sum(abs(c.error) for c in cases) / len(cases)


def summary(cases: list[Case]) -> dict[str, float | None]:
    """MAPE over all cases, by phase, and for dense and sparse designs."""
    return {
        "all": mape(cases),
        "prefill": mape([c for c in cases if c.shape.phase == "prefill"]),
        "decode": mape([c for c in cases if c.shape.phase == "decode"]),
        "dense": mape([c for c in cases if not c.shape.sparse]),
        "sparse": mape([c for c in cases if c.shape.sparse]),
    }


def check_device(profile: HardwareProfile, device_type: str, device_name: str) -> None:
    """Reject a profile measured on another kind of device, or a calibration from another device."""
    if profile.device_type != device_type:
        raise SpecError(
            f"profile '{profile.name}' is for a {profile.device_type} device, but --device selects a {device_type}: "
            f"calibrate on this device with 'ctxsim calibrate --device ...' or pick the matching --device"
        )
    calibrated_on = profile.provenance.device
    if profile.provenance.kind == "calibration" and calibrated_on != device_name:
        raise SpecError(
            f"profile '{profile.name}' was calibrated on '{calibrated_on}', not on this device '{device_name}': "
            "calibrate on this device first"
        )


# ---------------------------------------------------------------------------------------------
# Plot


def plot_cases(cases: list[Case], path: Path, title: str) -> None:
    """Write a PNG: predicted against measured time, and the error against context length."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {"prefill": "o", "decode": "s"}
    designs = sorted({c.shape.design for c in cases})
    colors = {d: f"C{i}" for i, d in enumerate(designs)}
    for case in cases:
        s = case.shape
        style = {"marker": markers[s.phase], "color": colors[s.design], "linestyle": "none"}
        left.plot(case.measured_s * 1e3, case.predicted_s * 1e3, **style)
        right.plot(s.context, case.error * 100, **style)

    low = min(min(c.measured_s, c.predicted_s) for c in cases) * 1e3 / 1.5
    high = max(max(c.measured_s, c.predicted_s) for c in cases) * 1e3 * 1.5
    left.plot([low, high], [low, high], color="gray", linewidth=1)
    left.set(xscale="log", yscale="log", xlabel="measured (ms)", ylabel="predicted (ms)", title="Layer run time")
    right.axhline(0, color="gray", linewidth=1)
    right.set(xscale="log", xlabel="context length (tokens)", ylabel="error (%)", title="Error against context length")
    for design in designs:
        right.plot([], [], "o", color=colors[design], label=design)
    for phase, marker in markers.items():
        right.plot([], [], marker, color="black", fillstyle="none", label=phase)
    right.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()

    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        figure.savefig(temporary, dpi=120)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)
