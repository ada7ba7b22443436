"""``ctxsim calibrate`` and ``ctxsim validate``: fit a hardware profile on this machine, and test it.

``calibrate`` times the reference model's ops on a grid of layer shapes, fits efficiency curves
per op kind and op name, and writes a calibrated profile. ``validate`` times held-out layer runs and compares
them with the profile's predictions. torch and refmodel are imported inside the run functions,
so that ``import ctxsim`` stays light.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from ctxsim.calibrate.shapes import CASE_SETS, GRIDS, calibration_grid, validation_cases
from ctxsim.cli.common import format_table, human_seconds, positive_int, print_json
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import HardwareProfile, hardware_names, load_hardware

# Exit status after Ctrl-C, as shells report SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
DTYPES = ("float32", "bfloat16")

# Shipped profiles by the CUDA device name they match (a substring of torch's device name).
# NOTE: an H100 name alone does not tell SXM from PCIe; 'H100 PCIe' is matched first.
GPU_PROFILES = (
    ("H100 PCIe", "h100-pcie"),
    ("H100", "h100-sxm"),
    ("H200", "h200"),
    ("H800", "h800"),
    ("H20", "h20"),
    ("A100-SXM4-40GB", "a100-40gb-sxm"),
    ("A100", "a100-80gb-sxm"),
    ("B200", "b200"),
    ("B300", "b300"),
    ("GB200", "gb200"),
    ("GB300", "gb300"),
    ("L40S", "l40s"),
    ("RTX 4090", "rtx-4090"),
    ("RTX 5090", "rtx-5090"),
    ("MI300X", "mi300x"),
    ("MI325X", "mi325x"),
    ("MI355X", "mi355x"),
)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    _add_calibrate(subparsers)
    _add_validate(subparsers)


def _add_calibrate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="Time the reference model on this machine and write a calibrated hardware profile.",
        description=(
            "Time reference-model ops (GEMMs, attention cores, indexer scores, top-k, elementwise ops, copies, "
            "gathers) over a grid of layer shapes on one device, fit efficiency curves per op kind and op "
            "name and the launch overhead, and write a hardware profile YAML with the run's provenance."
        ),
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:INDEX (default cpu).")
    parser.add_argument("--out", required=True, type=Path, help="Output profile path (.yaml).")

    grid = parser.add_mutually_exclusive_group()
    grid.add_argument(
        "--quick", dest="grid", action="store_const", const="quick",
        help=f"Time the quick grid ({len(calibration_grid('quick'))} layer runs); same as --grid quick.",
    )
    grid.add_argument(
        "--grid", choices=GRIDS,
        help=(
            "Shape grid: tiny (a smoke test of seconds, not a usable fit), quick, or full "
            f"(default, {len(calibration_grid('full'))} layer runs)."
        ),
    )
    parser.set_defaults(grid="full")

    parser.add_argument(
        "--base", default=None,
        help="Profile to take peaks and links from (default: cpu for a CPU, the profile matching a GPU's name).",
    )
    parser.add_argument("--force", action="store_true", help="Overwrite --out if it exists.")
    parser.add_argument(
        "--threads", type=positive_int, default=1,
        help=(
            "torch threads on a CPU (default 1). One thread is timed by its CPU time, so other processes do "
            "not distort the timings; more threads are timed by wall time."
        ),
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default=None,
        help="Dtype the reference model runs in (default bfloat16, the activation dtype ctxsim counts).",
    )
    parser.set_defaults(func=run_calibrate)


def _add_validate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="Compare a profile's predicted layer times with reference-model runs on this machine.",
        description=(
            "Time end-to-end reference-model layer runs (prefill and decode, dense and sparse designs, several "
            "context lengths) at widths and context lengths outside the calibration grids, and compare them "
            "with the times the profile predicts. Prints each case's error and the mean absolute percentage "
            "error (MAPE)."
        ),
    )
    parser.add_argument("--profile", required=True, help="Hardware profile name or YAML path.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:INDEX (default cpu).")
    parser.add_argument(
        "--cases", choices=CASE_SETS, default="quick",
        help=(
            f"Case set: tiny (a smoke test), quick ({len(validation_cases('quick'))} layer runs, default) "
            f"or full ({len(validation_cases('full'))})."
        ),
    )
    parser.add_argument("--json", action="store_true", help="Print JSON: the cases and the MAPE as a fraction.")
    parser.add_argument("--plot", type=Path, default=None, help="Write a PNG of predicted against measured time.")
    parser.set_defaults(func=run_validate)


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """One progress line on stderr: redrawn in place on a terminal, a line per step elsewhere."""

    def __init__(self, title: str, stream=None):
        self.title = title
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, label: str) -> None:
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "#" * filled + "." * (width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"{self.title} [{bar}] {done}/{total} {elapsed:5.0f} s  {label}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
            if done == total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------------
# calibrate


def _base_profile(name: str | None, device_type: str, device_name: str) -> HardwareProfile:
    if name is not None:
        return load_hardware(name)
    if device_type == "cpu":
        return load_hardware("cpu")
    for part, profile in GPU_PROFILES:
        if part.lower() in device_name.lower() and profile in hardware_names():
            return load_hardware(profile)
    raise SpecError(f"no shipped profile matches device '{device_name}': pass --base PROFILE (see 'ctxsim hardware')")


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _warn_if_busy(cores: int | None, threads: int | None) -> float | None:
    """Warn when other processes compete for the cores that wall-clock timings depend on."""
    load = _load_average()
    if load is not None and cores and threads != 1 and load > 0.5 * cores:
        sys.stderr.write(
            f"warning: the 1-minute load average is {load:.1f} on {cores} cores; other processes will make "
            "wall-clock timings noisy (one thread, timed by its CPU time, is less affected)\n"
        )
    return load


def run_calibrate(args: argparse.Namespace) -> int:
    from ctxsim.calibrate.profile import check_output, profile_name

    out: Path = args.out
    check_output(out, args.force)
    try:
        return _calibrate(args, out, profile_name(out))
    except KeyboardInterrupt:
        sys.stderr.write(f"\nctxsim calibrate: interrupted; {out} was not written\n")
        return EXIT_INTERRUPTED


def _calibrate(args: argparse.Namespace, out: Path, name: str) -> int:
    import torch

    from ctxsim.calibrate.fit import fit_samples
    from ctxsim.calibrate.profile import DeviceInfo, calibrated_profile, residuals, write_profile
    from ctxsim.calibrate.shapes import copy_sizes, gather_sizes
    from ctxsim.spec.hardware import CalibrationRun
    from refmodel import timing

    began = time.perf_counter()
    device = timing.resolve_device(args.device)
    device_type = timing.profile_device_type(device)
    info = DeviceInfo(
        timing.device_name(device), device_type, timing.device_memory_bytes(device), timing.software_versions(device)
    )
    base = _base_profile(args.base, device_type, info.name)
    dtype_name = args.dtype or "bfloat16"
    threads = args.threads if device.type == "cpu" else None
    cpu_clock = "thread" if threads == 1 else "wall"
    load = _warn_if_busy(os.cpu_count(), threads) if device.type == "cpu" else None
    timer = timing.Timer(device, getattr(torch, dtype_name), cpu_clock)

    with timing.torch_threads(threads):
        measured = timing.measure(
            timer, calibration_grid(args.grid), copy_sizes(args.grid), gather_sizes(args.grid),
            Progress(f"calibrate {args.grid}"),
        )

    # NOTE: collectives are not timed, so the profile keeps the base profile's links even when
    # several devices are present.
    fit = fit_samples(measured.samples, base, measured.launch_overhead_s)
    run = CalibrationRun(
        base_profile=base.name,
        torch_dtype=dtype_name,
        threads=threads,
        clock=timing.clock_name(device, cpu_clock),
        grid=args.grid,
        shapes=measured.shapes,
        repeats=timer.repeats.describe(),
        samples=len(measured.samples),
        duration_s=round(time.perf_counter() - began, 1),
        load_average=load,
        residuals=residuals(fit),
    )
    date = datetime.date.today().isoformat()
    peaks = "measured" if device.type == "cpu" else "base"
    profile = calibrated_profile(base, fit, measured.samples, name=name, device=info, date=date, run=run, peaks=peaks)
    write_profile(profile, out, args.force)

    print(f"wrote {out}: profile '{profile.name}' for {info.name}, {len(measured.samples)} timed ops in {run.duration_s:.0f} s")
    rows = [
        [kind, str(r.samples), f"{r.median_abs_error:.1%}", f"{r.max_abs_error:.1%}"] for kind, r in run.residuals.items()
    ]
    print(format_table(rows, ["kind", "ops", "median |error|", "max |error|"]))
    print(f"launch overhead {human_seconds(profile.launch_overhead_s)}; check it with: ctxsim validate --profile {out} --device {args.device}")
    return 0


# ---------------------------------------------------------------------------------------------
# validate


def run_validate(args: argparse.Namespace) -> int:
    profile = load_hardware(args.profile)
    if args.plot is not None and not args.plot.parent.is_dir():
        raise SpecError(f"folder not found: {args.plot.parent}; create it or choose another --plot path")
    try:
        return _validate(args, profile)
    except KeyboardInterrupt:
        sys.stderr.write("\nctxsim validate: interrupted\n")
        return EXIT_INTERRUPTED


def _validate(args: argparse.Namespace, profile: HardwareProfile) -> int:
    import torch

    from ctxsim.calibrate.validate import Case, check_device, plot_cases, predict_layer_s, summary
    from refmodel import timing

    device = timing.resolve_device(args.device)
    name = timing.device_name(device)
    check_device(profile, timing.profile_device_type(device), name)
    run = profile.provenance.calibration
    dtype_name = run.torch_dtype if run is not None else "bfloat16"
    threads = None
    if device.type == "cpu":
        threads = run.threads if run is not None else 1
    cpu_clock = "thread" if threads == 1 else "wall"
    if device.type == "cpu":
        _warn_if_busy(os.cpu_count(), threads)
    timer = timing.Timer(device, getattr(torch, dtype_name), cpu_clock)

    shapes = validation_cases(args.cases)
    progress = Progress(f"validate {args.cases}")
    cases = []
    with timing.torch_threads(threads):
        for i, shape in enumerate(shapes):
            progress(i, len(shapes), shape.label)
            cases.append(Case(shape, timer.layer(shape).time_s, predict_layer_s(shape, profile)))
        progress(len(shapes), len(shapes), "done")

    mapes = summary(cases)
    if args.plot is not None:
        title = f"{profile.name} on {name}: MAPE {mapes['all']:.1%}"
        plot_cases(cases, args.plot, title)
    if args.json:
        print_json(
            {
                "profile": profile.name,
                "device": name,
                "torch_dtype": dtype_name,
                "threads": threads,
                "cases": [c.to_dict() for c in cases],
                "mape": mapes["all"],
                "mape_by_group": mapes,
            }
        )
        return 0
    _print_cases(cases, mapes, profile, name, dtype_name, threads)
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_cases(cases, mapes, profile: HardwareProfile, name: str, dtype_name: str, threads: int | None) -> None:
    rows = [
        [
            c.shape.design, str(c.shape.d_model), c.shape.phase, str(c.shape.context),
            human_seconds(c.measured_s), human_seconds(c.predicted_s), f"{c.error:+.1%}",
        ]
        for c in cases
    ]
    threads_text = ""
    if threads:
        threads_text = f", {threads} thread" + ("s" if threads > 1 else "")
    print(f"profile '{profile.name}' on {name} ({dtype_name}{threads_text}): held-out layer runs")
    print(format_table(rows, ["design", "d_model", "phase", "context", "measured", "predicted", "error"]))
    groups = ", ".join(f"{group} {_percent(value)}" for group, value in mapes.items() if group != "all")
    print(f"MAPE {_percent(mapes['all'])} ({groups})")
