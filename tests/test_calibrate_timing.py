"""The torch side of calibration: how op regions are timed, and the layer runs behind them."""

import pytest

torch = pytest.importorskip("torch")

from ctxsim.calibrate.shapes import LayerShape  # noqa: E402
from ctxsim.counts.estimate import estimate  # noqa: E402
from ctxsim.spec.errors import SpecError  # noqa: E402
from refmodel import timing  # noqa: E402


class _TickClock:
    """A clock that advances one second per reading, so each mark is one tick after the last."""

    def __init__(self):
        self.now = 0

    def mark(self) -> int:
        self.now += 1
        return self.now

    def seconds(self, start: int, end: int) -> float:
        return float(end - start)


def _regions() -> tuple[dict[str, float], float]:
    timer = timing.RegionTimer(_TickClock())  # start mark: tick 1
    with timer.op("a"):
        with timer.op("b"):  # nested: no mark of its own
            pass
    timer.clock.mark()  # work between regions: tick 3
    with timer.op("c"):
        pass
    with timer.op("a"):
        pass
    return timer.op_seconds()


def test_region_timer_gap_goes_to_next_op():
    # a ends at tick 2 (1 s after the start); c ends at tick 4, after the gap at tick 3 (2 s).
    times, _ = _regions()
    assert times["c"] == 2.0


def test_region_timer_sums_repeated_op():
    # a: 1 s for its first region and 1 s (tick 4 to 5) for its second.
    times, _ = _regions()
    assert times["a"] == 2.0


def test_region_timer_nested_not_marked():
    times, _ = _regions()
    assert "b" not in times


def test_region_timer_total_is_sum():
    times, total = _regions()
    assert total == sum(times.values())


def test_resolve_device_cpu():
    assert timing.resolve_device("cpu") == torch.device("cpu")


def test_resolve_device_invalid():
    with pytest.raises(SpecError, match="invalid device"):
        timing.resolve_device("gpu:x")


def test_clock_names():
    cpu = torch.device("cpu")
    assert (timing.clock_name(cpu, "thread"), timing.clock_name(cpu, "wall")) == ("thread CPU time", "wall time")


def test_layer_ops_counts_match_estimate():
    # The fit uses the reference model's exact counts, which equal ctxsim.estimate's.
    shape = LayerShape("dsa", 128, "decode", 300)
    timer = timing.Timer(torch.device("cpu"), torch.bfloat16, "thread", timing.Repeats(0, 1, 1, 0.0))
    with timing.torch_threads(1):
        measured = timer.layer_ops(shape)
    counted = {t.op.name: t.op.flops for t in measured.ops}
    analytic = {op.name: op.flops for op in estimate(shape.spec(), shape.workload()).ops if op.layer_kind is not None}
    assert counted == analytic


def test_decode_runs_repeat():
    # Each repeat undoes the previous decode step's cache append, so runs do not pile up tokens.
    shape = LayerShape("msa", 128, "decode", 200)
    timer = timing.Timer(torch.device("cpu"), torch.bfloat16, "thread", timing.Repeats(1, 3, 3, 0.0))
    with timing.torch_threads(1):
        assert timer.layer(shape).runs == 3


def test_torch_threads_restored():
    before = torch.get_num_threads()
    with timing.torch_threads(1):
        pass
    assert torch.get_num_threads() == before
