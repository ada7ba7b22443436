"""The per-device section of ``ctxsim estimate``: memory and collective traffic of each device of a plan."""

from __future__ import annotations

from ctxsim.cli.common import format_table, human_bytes
from ctxsim.counts.parallel import PIPELINE_BUBBLE_DEFINITION, DeviceCounts, ParallelCounts


def _rank_ranges(ranks: list[int]) -> str:
    """'0-3, 8-11' for sorted ranks."""
    parts, start, previous = [], ranks[0], ranks[0]
    for rank in ranks[1:] + [None]:
        if rank is not None and rank == previous + 1:
            previous = rank
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if rank is not None:
            start = previous = rank
    return ", ".join(parts)


def _short(name: str) -> str:
    return name.removeprefix("comm.")


def _groups(counts: ParallelCounts) -> list[tuple[list[int], DeviceCounts]]:
    """Devices with identical numbers, grouped, in rank order of their first member."""
    groups: dict[tuple, list[DeviceCounts]] = {}
    for device in counts.devices:
        key = (
            device.layout.pp_rank, device.layout.stage_layers, len(device.layout.kv_layers), device.layout.batch,
            device.weights_bytes, device.kv_cache_bytes, device.activation_bytes,
            tuple((p, tuple(sorted(ops.items()))) for p, ops in sorted(device.traffic_bytes.items())),
        )
        groups.setdefault(key, []).append(device)
    return [([d.rank for d in members], members[0]) for members in groups.values()]


def format_per_device(counts: ParallelCounts) -> str:
    """Table of devices (grouped where their numbers are equal), then traffic totals and notes.

    Each traffic column is one collective op in one phase: S summed over the phase's runs.
    """
    plan = counts.plan
    columns = []
    for device in counts.devices:
        for phase, ops in device.traffic_bytes.items():
            for name in ops:
                if (phase, name) not in columns:
                    columns.append((phase, name))
    header = ["ranks", "stage", "layers", "KV layers", "batch", "weights", "KV cache", "activations"]
    header += [f"{phase} {_short(name)}" for phase, name in columns]
    rows = []
    for ranks, device in _groups(counts):
        layers = device.layout.stage_layers
        row = [
            _rank_ranges(ranks),
            str(device.layout.pp_rank),
            f"{layers[0]}-{layers[-1]}",
            str(len(device.layout.kv_layers)),
            str(device.layout.batch),
            human_bytes(device.weights_bytes),
            human_bytes(device.kv_cache_bytes),
            human_bytes(device.activation_bytes),
        ]
        traffic = [device.traffic_bytes.get(phase, {}).get(name) for phase, name in columns]
        rows.append(row + ["-" if size is None else human_bytes(size) for size in traffic])

    lines = [
        "",
        f"per device, {plan.describe()} on {plan.world_size} devices (devices with equal numbers share a row; "
        "traffic is the NCCL size S of each collective summed over the phase):",
        format_table(rows, header, right_align_from=1),
    ]
    for phase, totals in counts.traffic_bytes_per_step.items():
        text = ", ".join(f"{_short(name)} {human_bytes(size)}" for name, size in totals.items())
        lines.append(f"traffic per {'prefill' if phase == 'prefill' else 'decode step'}, all devices: {text or 'none'}")
    busiest = counts.busiest()
    lines.append(
        f"busiest device: rank {busiest.rank}, {human_bytes(busiest.memory_bytes)} "
        "(weights + KV cache + prefill activation peak)"
    )
    if counts.pipeline_bubble is not None:
        lines.append(
            f"pipeline bubble (prefill): {counts.pipeline_bubble:.3f} over {counts.prefill_passes} passes, "
            f"the {PIPELINE_BUBBLE_DEFINITION}"
        )
    if counts.attention_imbalance is not None:
        lines.append(f"cp attention load: the busiest cp rank does {counts.attention_imbalance:.3f}x the mean causal work")
    if counts.layer_split_gain is not None:
        lines.append(f"LayerSplit KV capacity gain: {counts.layer_split_gain:.3f}x against the same plan without it")
    lines += [f"note: {note}" for note in counts.notes]
    return "\n".join(lines)
