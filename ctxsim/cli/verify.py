"""``ctxsim verify``: run the torch reference model and check the analytic counts op by op.

torch and refmodel are imported inside ``run_verify`` so that ``import ctxsim`` stays light.
"""

from __future__ import annotations

import argparse
import os
import time

from ctxsim.cli import verify_dist
from ctxsim.cli.common import (
    build_workload,
    format_table,
    human_bytes,
    parse_non_negative_tokens,
    parse_tokens,
    positive_int,
    print_json,
)
from ctxsim.spec import SpecError, Workload, load_model, preset_names
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.spec.model import ModelSpec

DEFAULT_CONTEXT = 256
DEFAULT_CHUNK = 96
# Bytes of one float32 weight in the reference model.
REFMODEL_WEIGHT_BYTES = 4


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="Run the torch reference model and compare its counted work with the analytic counts.",
        description=(
            "Build the reference model of a preset, run the workload, and compare what it counted with "
            "ctxsim's analytic counts op by op. Exits 1 on any mismatch."
        ),
    )
    # Neither is needed with --nproc, which can run its built-in suite of plans.
    target = parser.add_mutually_exclusive_group(required=False)
    target.add_argument("--model", help="Preset name, ctxsim YAML path, or config.json path.")
    target.add_argument("--all", action="store_true", help="Verify every preset (at --scale small).")
    parser.add_argument(
        "--scale", choices=("small", "full"), default="small",
        help="small: scaled-down widths, layers and selection sizes (runs on a CPU); full: the real sizes.",
    )
    parser.add_argument(
        "--context", type=parse_tokens, default=DEFAULT_CONTEXT,
        help=f"Context length N in tokens (default {DEFAULT_CONTEXT}).",
    )
    parser.add_argument(
        "--chunk-size", type=parse_tokens, default=DEFAULT_CHUNK,
        help=f"Prefill chunk size in tokens (default {DEFAULT_CHUNK}; use the context length for one chunk).",
    )
    parser.add_argument(
        "--cached-context", type=parse_non_negative_tokens, default=0,
        help="Tokens cached before the counted prefill (default 0).",
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="Sequences processed together (default 1).")
    parser.add_argument("--phase", choices=("prefill", "decode", "both"), default="both", help="Phase to run (default both).")
    parser.add_argument(
        "--execution", choices=("gathered", "masked"), default="gathered",
        help="Sparse layers gather selected keys, or compute dense scores plus a mask (default gathered).",
    )
    parser.add_argument(
        "--mla-mode", choices=("auto", "expanded", "absorbed"), default="auto",
        help="MLA execution mode (default auto).",
    )
    parser.add_argument("--kv-dtype", choices=KV_DTYPES, default=None, help="KV-cache dtype (default: the model's).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights and tokens (default 0).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    verify_dist.add_arguments(parser)
    parser.set_defaults(func=run_verify)


def _workload(args: argparse.Namespace) -> Workload:
    return build_workload(
        phase=args.phase,
        context=args.context,
        batch=args.batch,
        chunk_size=args.chunk_size,
        cached_context=args.cached_context,
        kv_dtype=args.kv_dtype,
        execution=args.execution,
        mla_mode=args.mla_mode,
    )


def _check_fits(spec: ModelSpec) -> None:
    """Raise SpecError when a full-scale model's float32 weights cannot fit in this machine's memory."""
    needed = spec.n_params * REFMODEL_WEIGHT_BYTES
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise SpecError(
            f"full-scale {spec.name} needs {human_bytes(needed)} for its float32 weights and this machine has "
            f"{human_bytes(available)}: use --scale small"
        )


def verify_one(spec: ModelSpec, workload: Workload, scale: str, seed: int) -> dict:
    """Build, run and compare one model; returns a JSON-ready result."""
    import torch

    from ctxsim.counts import estimate
    from refmodel.build import scale_spec
    from refmodel.compare import compare_reports, mismatches
    from refmodel.harness import count_workload
    from refmodel.model import RefModel

    run_spec = scale_spec(spec, scale)
    if scale == "full":
        _check_fits(run_spec)
    # Small-scale matrices are tiny: a second intra-op thread only adds synchronisation, which
    # costs far more than the work when other processes share the cores.
    threads = torch.get_num_threads()
    if scale == "small":
        torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        analytic = estimate(run_spec, workload)
        model = RefModel(run_spec, seed=seed)
        counted = count_workload(model, workload, seed=seed)
        rows = compare_reports(analytic, counted, run_spec)
    finally:
        torch.set_num_threads(threads)
    return {
        "model": spec.name,
        "scale": scale,
        "run_spec": run_spec.name,
        "n_layer": run_spec.n_layer,
        "d_model": run_spec.d_model,
        "wall_s": time.perf_counter() - start,
        "compared": len(rows),
        "mismatches": len(mismatches(rows)),
        "rows": [row.to_dict() for row in rows],
    }


def _workload_text(workload: Workload) -> str:
    chunk = f"chunks of {workload.chunk_size}" if workload.chunk_size else "one chunk"
    cached = f", {workload.cached_context} cached" if workload.cached_context else ""
    return f"context {workload.context}{cached}, {chunk}, batch {workload.batch}, {workload.phase}, {workload.execution}"


def _row_table(rows: list[dict]) -> str:
    table = [
        [
            r["phase"], r["layer_kind"] or "-", r["op"], r["quantity"],
            f"{r['analytic']:,}", f"{r['counted']:,}", f"{r['difference']:+,}", "ok" if r["difference"] == 0 else "MISMATCH",
        ]
        for r in rows
    ]
    header = ["phase", "layer kind", "op", "quantity", "analytic", "counted", "difference", "status"]
    return format_table(table, header, right_align_from=4)


def _print_result(result: dict, workload: Workload, every_row: bool) -> None:
    print(
        f"{result['model']} ({result['scale']}: {result['n_layer']} layers, d_model {result['d_model']}), "
        f"{_workload_text(workload)}"
    )
    shown = [r for r in result["rows"] if every_row and (r["analytic"] or r["counted"])]
    shown = shown or [r for r in result["rows"] if r["difference"]]
    if shown:
        print(_row_table(shown))
    print(f"{result['compared']} numbers compared, {result['mismatches']} mismatches ({result['wall_s']:.1f} s)")


def run_verify(args: argparse.Namespace) -> int:
    workload = _workload(args)
    if verify_dist.wants_distributed(args):
        return verify_dist.run_verify_distributed(args, workload)
    if not args.all and args.model is None:
        raise SpecError("missing --model: name a preset, or pass --all, or --nproc N for the multi-rank suite")
    if args.all and args.scale == "full":
        raise SpecError("--all runs every preset at --scale small: drop --scale full, or pass one --model")
    if args.all:
        specs = [load_model(name) for name in preset_names()]
    else:
        specs = [load_model(args.model)]

    results = []
    for spec in specs:
        if args.all and args.kv_dtype == "fp8_ds_mla" and any(l.attention.kind == "gqa" for l in spec.layer_kinds.values()):
            continue  # fp8_ds_mla applies to MLA models only
        result = verify_one(spec, workload, args.scale, args.seed)
        results.append(result)
        if not args.json:
            _print_result(result, workload, every_row=not args.all)
            if args.all:
                print()

    failed = [r["model"] for r in results if r["mismatches"]]
    if args.json:
        print_json(results if args.all else results[0])
    elif args.all:
        total = sum(r["wall_s"] for r in results)
        print(f"{len(results)} models verified, {len(failed)} with mismatches ({total:.1f} s)")
        if failed:
            print(f"mismatches in: {', '.join(failed)}")
    return 1 if failed else 0
