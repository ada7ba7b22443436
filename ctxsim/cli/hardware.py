"""``ctxsim hardware``: list the hardware profiles, or show one with the source of each number."""

from __future__ import annotations

import argparse

from ctxsim.cli.common import format_table, human_bytes, human_count, human_seconds, print_json
from ctxsim.spec.hardware import COMPUTE_KINDS, HardwareProfile, hardware_names, load_hardware


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    hardware = subparsers.add_parser(
        "hardware", help="List the hardware profiles, or show one profile with its sources."
    )
    hardware.add_argument(
        "profile", nargs="?", default=None, help="Profile name or YAML path to show in full; omit to list all."
    )
    hardware.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    hardware.set_defaults(func=run_hardware)


def _summary_row(p: HardwareProfile) -> dict:
    return {
        "name": p.name,
        "description": p.description,
        "confidence": p.confidence,
        "bf16_flops_per_s": p.peak_flops["bf16"],
        "fp8_flops_per_s": p.peak_flops.get("fp8"),
        "memory_bytes": p.memory_bytes,
        "memory_bandwidth_bytes_per_s": p.memory_bandwidth_bytes_per_s,
        "scale_up_bandwidth_bytes_per_s": p.scale_up.bandwidth_bytes_per_s,
        "scale_up_domain_size": p.scale_up.domain_size,
        "scale_out_bandwidth_bytes_per_s": p.scale_out.bandwidth_bytes_per_s if p.scale_out else None,
    }


def _list(as_json: bool) -> int:
    profiles = [load_hardware(name) for name in hardware_names()]
    if as_json:
        print_json([_summary_row(p) for p in profiles])
        return 0
    rows = []
    for p in profiles:
        fp8 = p.peak_flops.get("fp8")
        scale_out = p.scale_out.bandwidth_bytes_per_s if p.scale_out else None
        rows.append(
            [
                p.name,
                p.confidence,
                human_count(p.peak_flops["bf16"], "FLOP/s"),
                human_count(fp8, "FLOP/s") if fp8 else "-",
                human_bytes(p.memory_bytes),
                human_count(p.memory_bandwidth_bytes_per_s, "B/s"),
                f"{human_count(p.scale_up.bandwidth_bytes_per_s, 'B/s')} x{p.scale_up.domain_size}",
                human_count(scale_out, "B/s") if scale_out else "-",
            ]
        )
    header = ["profile", "confidence", "BF16 dense", "FP8 dense", "memory", "mem BW", "scale-up/dir x domain", "NIC/dir"]
    print(format_table(rows, header, right_align_from=2))
    print("Dense peaks (no sparsity); link bandwidths are per device in one direction. 'ctxsim hardware NAME' shows sources.")
    return 0


def _show(profile: HardwareProfile) -> None:
    print(f"{profile.name}: {profile.description}")
    print(f"confidence: {profile.confidence}" + (f" ({profile.confidence_note})" if profile.confidence_note else ""))
    for dtype, flops in profile.peak_flops.items():
        print(f"  peak {dtype:5} {human_count(flops, 'FLOP/s')}")
    print(f"  vector FP32 {human_count(profile.vector_flops_per_s, 'FLOP/s')}")
    print(f"  memory {human_bytes(profile.memory_bytes)} at {human_count(profile.memory_bandwidth_bytes_per_s, 'B/s')}")
    print(f"  launch overhead {human_seconds(profile.launch_overhead_s)}")

    up = profile.scale_up
    p2p = f", one peer {human_count(up.p2p_bandwidth_bytes_per_s, 'B/s')}" if up.p2p_bandwidth_bytes_per_s else ""
    print(
        f"  scale-up {up.topology}, {up.domain_size} devices, {human_count(up.bandwidth_bytes_per_s, 'B/s')} "
        f"per direction{p2p}, ring efficiency {up.efficiency:g}"
    )
    if up.in_switch_reduction:
        isr = up.in_switch_reduction
        print(f"  in-switch all-reduce from {isr.min_ranks} ranks, efficiency {isr.efficiency:g}")
    if profile.scale_out:
        out = profile.scale_out
        print(f"  scale-out {human_count(out.bandwidth_bytes_per_s, 'B/s')} per direction, efficiency {out.efficiency:g}")
    else:
        print("  scale-out: none")

    rows = [
        [kind, f"{profile.efficiency.of(kind).compute:g}", f"{profile.efficiency.of(kind).memory:g}"]
        for kind in COMPUTE_KINDS
    ]
    print(format_table(rows, ["op kind", "compute eff", "memory eff"], right_align_from=1))

    print("sources:")
    for key, source in profile.sources.items():
        print(f"  {key}: {source}")
    print(f"  scale_up: {up.source}")
    if profile.scale_out:
        print(f"  scale_out: {profile.scale_out.source}")
    for kind in COMPUTE_KINDS:
        print(f"  efficiency.{kind}: {profile.efficiency.of(kind).source}")
    print(f"provenance: {profile.provenance.kind}, {profile.provenance.date}")


def run_hardware(args: argparse.Namespace) -> int:
    if args.profile is None:
        return _list(args.json)
    profile = load_hardware(args.profile)
    if args.json:
        print_json(profile.model_dump(mode="json"))
    else:
        _show(profile)
    return 0
