"""Core speed of ctxsim: vectorised sweeps, one scalar estimate, import time and peak memory.

Each case runs in a fresh Python process, so its peak resident memory (ru_maxrss) and its
imports are its own. Cases and the targets they are checked against:

- sweep_grid: ``ctxsim.sweep`` of GLM-5.2 (78 layers) over 1,000 contexts (1k..10m, log-spaced)
  x 1,000 batch sizes = 1,000,000 points; totals only (FLOPs, bytes, KV, memory per phase).
  Target: at least 1,000,000 points/s.
- sweep_grid_by_kind: the same grid with the per-op-kind columns as well.
- sweep_contexts: 1,000,000 distinct contexts at batch 1, totals only.
- totals_grid: ``ctxsim.counts.totals.Totals.evaluate`` on the grid, without the DataFrame.
- sweep_hardware: 200 contexts at batch 1 on the h200 profile, with times (one op-level
  report and ``estimate_time`` per point). No target.
- estimate_scalar: one op-level ``ctxsim.estimate`` of GLM-5.2 at 128K tokens, prefill and
  decode, model already loaded. Target: at most 1 ms.
- import: ``import ctxsim`` in a fresh interpreter with compiled bytecode cached, as after an
  install. Target: under 300 ms, without torch.
- import_from_source: the same under the caller's environment; with PYTHONDONTWRITEBYTECODE=1
  every ctxsim module is compiled on each import.

    python benchmarks/bench_core.py                 # every case
    python benchmarks/bench_core.py --cases import estimate_scalar --repeats 9

Prints the machine and a Markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

MODEL = "glm-5.2"
GRID_CONTEXTS = "1k..10m"
GRID_POINTS = 1000
GRID_BATCHES = 1000
N_CONTEXTS = 1_000_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------
# Cases (each runs in its own process and prints one JSON object)


def case_sweep(repeats: int, by_kind: bool, contexts_only: bool, hardware: str | None = None) -> dict:
    import numpy as np
    import pandas  # noqa: F401  (imported here so that the first timed run does not import it)

    import ctxsim

    ctxsim.load_model(MODEL)
    if hardware is not None:
        kwargs = {"contexts": GRID_CONTEXTS, "points": 200, "hardware": hardware}
    elif contexts_only:
        kwargs = {"contexts": np.arange(1024, 1024 + N_CONTEXTS), "batches": 1}
    else:
        kwargs = {"contexts": GRID_CONTEXTS, "points": GRID_POINTS, "batches": np.arange(1, GRID_BATCHES + 1)}
    rows = 0

    def run() -> None:
        nonlocal rows
        rows = len(ctxsim.sweep(MODEL, by_kind=by_kind, **kwargs))

    times = _timed(run, repeats)
    return {"points": rows, "times_s": times, "peak_rss_mib": _peak_rss_mib()}


def case_totals_grid(repeats: int) -> dict:
    import numpy as np

    from ctxsim import Workload
    from ctxsim.counts.totals import Totals
    from ctxsim.sweep import context_grid

    contexts = context_grid(GRID_CONTEXTS, GRID_POINTS).astype(np.float64)
    batches = np.arange(1, GRID_BATCHES + 1, dtype=np.float64)
    totals = Totals(MODEL, Workload(context=int(contexts[0])))
    times = _timed(lambda: totals.evaluate(contexts, batches), repeats)
    return {"points": contexts.size * batches.size, "times_s": times, "peak_rss_mib": _peak_rss_mib()}


def case_estimate_scalar(repeats: int) -> dict:
    import ctxsim

    spec = ctxsim.load_model(MODEL)
    workload = ctxsim.Workload(context=131072)
    calls = 200
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            report = ctxsim.estimate(spec, workload)
        per_call.append((time.perf_counter() - start) / calls)
    return {"times_s": per_call, "ops": len(report.ops), "peak_rss_mib": _peak_rss_mib()}


def case_import(repeats: int, cached_bytecode: bool) -> dict:
    """Time ``import ctxsim`` in fresh interpreters.

    With ``cached_bytecode`` the interpreters read and write compiled bytecode under a temp
    PYTHONPYCACHEPREFIX (one untimed import fills it), as an installed package does. Without
    it they run with the caller's environment; under PYTHONDONTWRITEBYTECODE=1 every ctxsim
    module is compiled from source on each import.
    """
    import tempfile

    code = (
        "import time, resource, sys\n"
        "start = time.perf_counter(); cpu = resource.getrusage(resource.RUSAGE_SELF)\n"
        "import ctxsim\n"
        "wall = time.perf_counter() - start; end = resource.getrusage(resource.RUSAGE_SELF)\n"
        "used = end.ru_utime + end.ru_stime - cpu.ru_utime - cpu.ru_stime\n"
        "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'streamlit') if m in sys.modules]\n"
        "print(wall, used, ','.join(heavy))\n"
    )
    env = dict(os.environ)
    if cached_bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="ctxsim-pycache-")
        subprocess.run([sys.executable, "-c", "import ctxsim"], env=env, check=True)
    walls, cpus, heavy = [], [], set()
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
        walls.append(float(out[0]))
        cpus.append(float(out[1]))
        heavy.update(out[2].split(",") if len(out) > 2 else [])
    return {"times_s": walls, "cpu_s": cpus, "heavy_modules": sorted(heavy)}


CASES = {
    "sweep_grid": lambda r: case_sweep(r, by_kind=False, contexts_only=False),
    "sweep_grid_by_kind": lambda r: case_sweep(r, by_kind=True, contexts_only=False),
    "sweep_contexts": lambda r: case_sweep(r, by_kind=False, contexts_only=True),
    "totals_grid": case_totals_grid,
    "sweep_hardware": lambda r: case_sweep(r, by_kind=True, contexts_only=False, hardware="h200"),
    "estimate_scalar": case_estimate_scalar,
    "import": lambda r: case_import(r, cached_bytecode=True),
    "import_from_source": lambda r: case_import(r, cached_bytecode=False),
}


# ---------------------------------------------------------------------------------------------
# Driver


def _machine() -> list[str]:
    import numpy
    import pandas

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return [
        f"date: {datetime.date.today().isoformat()}",
        f"machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}",
        f"Python {platform.python_version()}, numpy {numpy.__version__}, pandas {pandas.__version__}",
        "load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    ]


def _row(name: str, result: dict) -> list[str]:
    times = result["times_s"]
    if "points" in result:
        rates = [result["points"] / t for t in times]
        return [
            name,
            f"{result['points']:,} points",
            f"{statistics.median(rates):,.0f} points/s (median); first run {rates[0]:,.0f}, best {max(rates):,.0f}",
            f"{result['peak_rss_mib']:,.0f} MiB",
        ]
    if name.startswith("import"):
        heavy = ", ".join(result["heavy_modules"]) or "none"
        return [
            name,
            f"{len(times)} fresh interpreters",
            f"{statistics.median(times) * 1e3:.0f} ms wall (median; min {min(times) * 1e3:.0f}), "
            f"{statistics.median(result['cpu_s']) * 1e3:.0f} ms CPU; heavy modules loaded: {heavy}",
            "",
        ]
    return [
        name,
        f"{result['ops']} op records",
        f"{statistics.median(times) * 1e3:.3f} ms per estimate (median of {len(times)} x 200 calls; "
        f"min {min(times) * 1e3:.3f})",
        f"{result['peak_rss_mib']:,.0f} MiB",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES), help="Cases to run (default all).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed repeats per case (default 5).")
    parser.add_argument("--child", choices=tuple(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(CASES[args.child](args.repeats)))
        return

    print("\n".join(_machine()))
    command = [sys.executable, __file__, "--repeats", str(args.repeats), "--child"]
    rows = []
    for name in args.cases:
        output = subprocess.run(command + [name], capture_output=True, text=True, check=True).stdout
        rows.append(_row(name, json.loads(output)))
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print()
    print("| case | size | result | peak RSS |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
