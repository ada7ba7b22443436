"""Time the reference model on the local device (CPU or CUDA) for ``ctxsim calibrate`` and ``validate``.

Two kinds of measurement:

- **Op timings** (calibration): one reference-model layer runs a prefill or a decode step. A
  ``RegionTimer`` marks the end of every outermost ``counter.op(name)`` region, and each op
  gets the time from the previous mark to its own end. So the work between regions (reading
  and decoding the cache, building masks) goes to the op that follows it, and the ops of a run
  add up to the run's wall time. A second run with a real Counter gives each op's exact counts.
- **Layer timings** (validation): the wall time of the same kind of layer run, end to end.

Plus three small probes: the launch overhead (back-to-back tiny ops), a memory copy, and an
embedding-row gather.

Clocks: on CUDA the marks are CUDA events recorded on the current stream, read after one
synchronisation at the end of the run, so a run is not slowed by synchronising inside it. On
CPU the marks are ``time.perf_counter_ns`` readings. Every timing is the median of repeated
runs after warm-up runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch

from ctxsim.counts.conventions import ACTIVATION_BYTES, INDEX_BYTES
from ctxsim.counts.names import OP_KIND
from ctxsim.counts.report import Op
from ctxsim.spec.dtypes import weight_bytes
from ctxsim.spec.errors import SpecError
from ctxsim.calibrate.shapes import LayerShape
from refmodel.attention import LayerCache
from refmodel.basic import RunContext
from refmodel.cache import RecordStore
from refmodel.counter import Counter
from refmodel.model import RefLayer

# ---------------------------------------------------------------------------------------------
# Devices


def resolve_device(text: str) -> torch.device:
    """Parse ``cpu``, ``cuda`` or ``cuda:i`` and check that the device exists here."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SpecError(f"invalid device '{text}': use cpu, cuda or cuda:INDEX") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise SpecError(f"unsupported device type '{device.type}': use cpu, cuda or cuda:INDEX")
    if not torch.cuda.is_available():
        raise SpecError(f"device '{text}' is not available: this torch build or machine has no CUDA device; use --device cpu")
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise SpecError(f"device '{text}' not found: this machine has {torch.cuda.device_count()} CUDA devices")
    return torch.device("cuda", index)


def profile_device_type(device: torch.device) -> str:
    """Return the HardwareProfile ``device_type`` of a torch device."""
    return "gpu" if device.type == "cuda" else "cpu"


def cpu_model_name() -> str:
    """Return the CPU model as /proc/cpuinfo names it, or what ``platform`` reports elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """Name of the device as its driver reports it, e.g. ``NVIDIA H200`` or ``AMD EPYC (2 cores)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model_name()} ({os.cpu_count()} cores)"


def device_memory_bytes(device: torch.device) -> int:
    """Device memory in bytes: the GPU's total memory, or the machine's RAM for a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _nvidia_driver_version() -> str | None:
    # NOTE: not run on a GPU yet. nvidia-smi is the usual way to read the driver release;
    # torch itself exposes only the CUDA runtime version.
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def software_versions(device: torch.device) -> dict[str, str]:
    """Versions that affect the timings: torch, Python, the OS kernel, and CUDA and the driver on GPUs."""
    versions = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
        driver = _nvidia_driver_version()
        versions["driver"] = driver if driver is not None else "unknown (nvidia-smi not found)"
    return versions


# ---------------------------------------------------------------------------------------------
# Clocks and the region timer


class _CpuClock:
    """Wall time (``perf_counter_ns``), or the calling thread's CPU time (``thread_time_ns``).

    With one torch thread every op runs on the calling thread, so its CPU time is the run's time
    without the time the OS gave to other processes: timings stay stable on a busy machine.
    """

    def __init__(self, device: torch.device, cpu_time: bool = False):
        self.device = device
        self.read = time.thread_time_ns if cpu_time else time.perf_counter_ns

    def mark(self) -> int:
        return self.read()

    def seconds(self, start: int, end: int) -> float:
        return (end - start) * 1e-9


class _CudaClock:
    """Marks are CUDA events on the current stream; reading them waits for the stream once."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.current_stream(device)

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return event

    def seconds(self, start: torch.cuda.Event, end: torch.cuda.Event) -> float:
        end.synchronize()
        return start.elapsed_time(end) * 1e-3  # elapsed_time is in milliseconds


CPU_CLOCKS = ("thread", "wall")


def make_clock(device: torch.device, cpu_clock: str = "wall"):
    """Make a clock for ``device``: CUDA events on a GPU, and on a CPU the thread's CPU time or wall time."""
    if device.type == "cuda":
        return _CudaClock(device)
    if cpu_clock not in CPU_CLOCKS:
        raise SpecError(f"unknown CPU clock '{cpu_clock}': use one of {', '.join(CPU_CLOCKS)}")
    return _CpuClock(device, cpu_time=cpu_clock == "thread")


def clock_name(device: torch.device, cpu_clock: str) -> str:
    """Describe how timings on ``device`` are taken, in words for the provenance."""
    if device.type == "cuda":
        return "CUDA events"
    return "thread CPU time" if cpu_clock == "thread" else "wall time"


class RegionTimer(Counter):
    """A Counter that counts nothing and marks the end of every outermost op region.

    ``op_seconds()`` gives each op name the time from the previous mark (or the start) to the
    end of each of its regions, summed over its regions.
    """

    def __init__(self, clock):
        super().__init__(enabled=False)
        self.clock = clock
        self.start = clock.mark()
        self.marks: list[tuple[str, object]] = []

    @contextmanager
    def op(self, name: str):
        outermost = self.name is None
        with super().op(name):
            yield
        if outermost:
            self.marks.append((name, self.clock.mark()))

    def op_seconds(self) -> tuple[dict[str, float], float]:
        """Time per op name, and the time from the start to the last mark."""
        out: dict[str, float] = {}
        previous = self.start
        for name, mark in self.marks:
            out[name] = out.get(name, 0.0) + self.clock.seconds(previous, mark)
            previous = mark
        total = self.clock.seconds(self.start, previous)
        return out, total


def median(values: list[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------------------------------
# Running one layer


@dataclass
class _Store:
    """Saved positions and tensors of a RecordStore, to undo a decode step's append between repeats."""

    positions: torch.Tensor
    parts: list[list[torch.Tensor]]


def _snapshot(store: RecordStore | None) -> _Store | None:
    if store is None:
        return None
    return _Store(store.positions, [list(parts) for parts in store.parts])


def _restore(store: RecordStore | None, saved: _Store | None) -> None:
    # A full store writes new tokens in place past the held ones, and a window store replaces
    # its tensors, so restoring the positions and tensor lists undoes an append and an eviction.
    if store is None or saved is None:
        return
    store.positions = saved.positions
    store.parts = [list(parts) for parts in saved.parts]


def _move_cache(cache: LayerCache, device: torch.device) -> LayerCache:
    """Move a layer's stores to ``device``: make_cache builds them on the CPU.

    NOTE: this sets RecordStore's tensors one by one, so it must follow RecordStore's fields.
    It does nothing on a CPU and has not run on a GPU yet.
    """
    for store in (cache.main, cache.index):
        if store is None or store.device == device:
            continue
        store.device = device
        store.parts = [[t.to(device) for t in parts] for parts in store.parts]
        store.positions = store.positions.to(device)
        store.tensor_scales = [t.to(device) for t in store.tensor_scales]
    return cache


def _fill_store(store: RecordStore, n_tokens: int, dtype: torch.dtype, device: torch.device, generator) -> None:
    """Append ``n_tokens`` random records in chunks, evicting as a window layer would."""
    step = 4096
    for first in range(1, n_tokens + 1, step):
        last = min(n_tokens, first + step - 1)
        positions = torch.arange(first, last + 1, device=device)
        values = [
            torch.randn(store.batch, last - first + 1, f.width, generator=generator, dtype=torch.float32).to(device, dtype)
            for f in store.fields
        ]
        store.append(values, positions)
        store.evict(last)


@dataclass
class _LayerRun:
    layer: RefLayer
    shape: LayerShape
    device: torch.device
    dtype: torch.dtype
    x: torch.Tensor
    prefilled: LayerCache | None = None
    saved: tuple = ()

    def cache(self) -> LayerCache:
        """Return a cache ready for one run: empty for a prefill, N - 1 tokens for a decode step."""
        if self.prefilled is None:
            cache = self.layer.attention.make_cache(self.shape.batch, self.shape.context, "bf16")
            return _move_cache(cache, self.device)
        _restore(self.prefilled.main, self.saved[0])
        _restore(self.prefilled.index, self.saved[1])
        return self.prefilled

    def run(self, counter: Counter) -> None:
        cache = self.cache()
        offset = self.shape.context - self.shape.new_tokens
        with torch.no_grad(), torch.device(self.device):
            for first, last in self.shape.chunks():
                positions = torch.arange(first, last + 1, device=self.device)
                ctx = RunContext(counter, positions, phase=self.shape.phase)
                self.layer(ctx, self.x[:, first - 1 - offset : last - offset], cache)


def _build_run(shape: LayerShape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> _LayerRun:
    spec = shape.spec()
    generator = torch.Generator().manual_seed(seed)
    layer = RefLayer(spec.layer_kinds[shape.design], spec, dtype, generator).to(device)
    x = torch.randn(shape.batch, shape.new_tokens, shape.d_model, generator=generator).to(device, dtype)
    run = _LayerRun(layer, shape, device, dtype, x)
    if shape.phase == "decode":
        cache = _move_cache(layer.attention.make_cache(shape.batch, shape.context, "bf16"), device)
        _fill_store(cache.main, shape.context - 1, dtype, device, generator)
        if cache.index is not None:
            _fill_store(cache.index, shape.context - 1, dtype, device, generator)
        run.prefilled = cache
        run.saved = (_snapshot(cache.main), _snapshot(cache.index))
    return run


def _counted_ops(run: _LayerRun) -> list[Op]:
    """Exact counts of one run of the layer, one Op per op name."""
    counter = Counter()
    counter.phase = run.shape.phase
    run.run(counter)
    ops = []
    for (phase, _, name), tally in counter.tallies.items():
        ops.append(
            Op(name, OP_KIND[name], phase, 1, tally.matmul_flops, tally.other_flops, tally.bytes_read, tally.bytes_written, run.shape.design)
        )
    return ops


@dataclass
class Repeats:
    """How often to run a measurement: warm-up runs, then timed runs until ``max_runs`` or the budget.

    At least ``min_runs`` timed runs are made whatever the budget.
    """

    warmup: int = 1
    min_runs: int = 3
    max_runs: int = 9
    budget_s: float = 1.5

    def describe(self) -> str:
        return (
            f"{self.warmup} warm-up run, then {self.min_runs} to {self.max_runs} timed runs "
            f"(more while under {self.budget_s:g} s); the median is kept"
        )


def _repeat(run_once: Callable[[], object], repeats: Repeats) -> list:
    for _ in range(repeats.warmup):
        run_once()
    results = []
    began = time.perf_counter()
    while len(results) < repeats.max_runs:
        results.append(run_once())
        if len(results) >= repeats.min_runs and time.perf_counter() - began > repeats.budget_s:
            break
    return results


@dataclass
class OpTiming:
    """Median time of one op of a layer run or probe, with its exact counts and forward passes."""

    op: Op
    time_s: float
    launches: int
    shape: str


@dataclass
class LayerTiming:
    shape: LayerShape
    ops: list[OpTiming]
    time_s: float
    runs: int


@dataclass
class Timer:
    """Times reference-model runs on one device, in one dtype, with one clock."""

    device: torch.device
    dtype: torch.dtype
    cpu_clock: str = "wall"
    repeats: Repeats = field(default_factory=Repeats)

    def clock(self):
        return make_clock(self.device, self.cpu_clock)

    def layer_ops(self, shape: LayerShape) -> LayerTiming:
        """Median time of each op of one layer run, with the exact counts of the op."""
        run = _build_run(shape, self.device, self.dtype)
        ops = _counted_ops(run)
        clock = self.clock()

        def once():
            timer = RegionTimer(clock)
            timer.phase = shape.phase
            run.run(timer)
            return timer.op_seconds()

        # The counted run above warms up the same code paths, so it replaces one warm-up run.
        results = _repeat(once, replace(self.repeats, warmup=max(0, self.repeats.warmup - 1)))
        launches = len(shape.chunks())
        timings = [OpTiming(op, median([r[0].get(op.name, 0.0) for r in results]), launches, shape.label) for op in ops]
        return LayerTiming(shape, timings, median([r[1] for r in results]), len(results))

    def layer(self, shape: LayerShape) -> LayerTiming:
        """Median time of one layer run, end to end (no marks between ops)."""
        run = _build_run(shape, self.device, self.dtype)
        clock = self.clock()

        def once():
            counter = Counter(enabled=False)
            start = clock.mark()
            run.run(counter)
            end = clock.mark()
            return clock.seconds(start, end)

        results = _repeat(once, self.repeats)
        return LayerTiming(shape, [], median(results), len(results))

    def _time(self, work: Callable[[], object]) -> float:
        clock = self.clock()

        def once():
            start = clock.mark()
            work()
            end = clock.mark()
            return clock.seconds(start, end)

        return median(_repeat(once, self.repeats))

    def launch(self, n_ops: int = 200) -> float:
        """Time per op of ``n_ops`` back-to-back one-element adds: the fixed cost of launching an op."""
        x = torch.zeros(1, device=self.device)

        def adds():
            for _ in range(n_ops):
                x.add_(1.0)

        return self._time(adds) / n_ops

    def copy(self, n_elements: int) -> OpTiming:
        """Time a tensor copy, counted as ctxsim counts a bf16 activation: 2 bytes per element each way."""
        src = torch.randn(n_elements, device=self.device).to(self.dtype)
        dst = torch.empty_like(src)
        moved = n_elements * ACTIVATION_BYTES
        op = Op("memory.copy", "memory", "prefill", 1, 0, 0, moved, moved)
        return OpTiming(op, self._time(lambda: dst.copy_(src)), 1, f"copy n={n_elements}")

    def gather(self, rows: int, d_model: int = 512, vocab: int = 32768) -> OpTiming:
        """Time the reference model's embedding lookup (``table[ids]``), counted as ctxsim counts ``embed``."""
        generator = torch.Generator().manual_seed(0)
        table = torch.randn(vocab, d_model, generator=generator).to(self.device, self.dtype)
        ids = torch.randint(0, vocab, (1, rows), generator=generator).to(self.device)
        # The counts of ctxsim.counts.ffn.embed_op for bf16 weights.
        table_bytes = rows * weight_bytes(d_model, "bf16")
        op = Op("embed", "gather", "prefill", 1, 0, 0, table_bytes + rows * INDEX_BYTES, rows * d_model * ACTIVATION_BYTES)
        return OpTiming(op, self._time(lambda: table[ids]), 1, f"gather rows={rows} d_model={d_model}")


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Pin torch's intra-op threads to ``n`` (None keeps the current count) and restore them after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# A whole calibration grid


@dataclass
class Measurements:
    """Everything a calibration times: op samples of layer runs and probes, and the launch overhead."""

    samples: list = field(default_factory=list)
    launch_overhead_s: float = 0.0
    shapes: list[str] = field(default_factory=list)


def _sample(timing: OpTiming):
    from ctxsim.calibrate.fit import Sample

    op = timing.op
    return Sample(
        op.kind, op.name, float(op.matmul_flops), float(op.other_flops), float(op.bytes_read + op.bytes_written),
        timing.launches, timing.time_s, op.dtype, timing.shape,
    )


def measure(
    timer: Timer,
    shapes: list[LayerShape],
    copies: tuple[int, ...],
    gathers: tuple[int, ...],
    progress: Callable[[int, int, str], None] = lambda done, total, label: None,
) -> Measurements:
    """Time the launch probe, every layer shape, the copies and the gathers, in that order."""
    out = Measurements()
    total = 1 + len(shapes) + len(copies) + len(gathers)
    progress(0, total, "launch overhead")
    out.launch_overhead_s = timer.launch()
    out.shapes.append("launch: 200 one-element adds")
    steps: list[tuple[str, Callable[[], list[OpTiming]]]] = []
    steps += [(shape.label, lambda shape=shape: timer.layer_ops(shape).ops) for shape in shapes]
    steps += [(f"copy {n} elements", lambda n=n: [timer.copy(n)]) for n in copies]
    steps += [(f"gather {rows} rows", lambda rows=rows: [timer.gather(rows)]) for rows in gathers]
    for done, (label, step) in enumerate(steps, start=1):
        progress(done, total, label)
        timings = step()
        out.samples += [_sample(t) for t in timings]
        out.shapes.append(timings[0].shape)
    progress(total, total, "done")
    return out
