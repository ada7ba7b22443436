"""Time and peak memory of a scaled-down DSA and MSA prefill on the CPU, up to 128K tokens.

Each (design, context) runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is
its own. The designs keep the released selection sizes (DSA top-2048 as DeepSeek-V3.2; MSA
16 blocks of 128 with forced init and local blocks as MiniMax-M3) at small widths, one layer
each, with counting off, in gathered execution and chunked prefill.

    python benchmarks/refmodel_prefill.py                      # 8K .. 128K, both designs
    python benchmarks/refmodel_prefill.py --contexts 4096 8192 --designs msa --threads 2

Prints a Markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

DEFAULT_CONTEXTS = [8192, 16384, 32768, 65536, 131072]
CHUNK_SIZE = 8192

MLA = {
    "kind": "mla", "n_head": 4, "q_lora_rank": 32, "kv_lora_rank": 32,
    "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
}
GQA = {"kind": "gqa", "n_head": 8, "n_kv_head": 2, "head_dim": 16}
MLP = {"kind": "dense", "intermediate_size": 64}
SELECTIONS = {
    "dsa": (MLA, {"kind": "dsa", "index_n_heads": 4, "index_head_dim": 16, "index_topk": 2048}),
    "msa": (GQA, {"kind": "msa", "block_size": 128, "topk_blocks": 16, "index_n_heads": 2, "index_head_dim": 16}),
}


def run_one(design: str, context: int, threads: int) -> dict:
    """Prefill ``context`` tokens of one design in this process; returns time and peak memory."""
    import torch

    torch.set_num_threads(threads)
    from ctxsim.spec.model import ModelSpec
    from refmodel.counter import Counter
    from refmodel.harness import run_span, sample_tokens
    from refmodel.model import RefModel

    attention, selection = SELECTIONS[design]
    spec = ModelSpec.model_validate(
        {
            "name": f"bench-{design}",
            "d_model": 64,
            "vocab_size": 256,
            "layer_kinds": {"layer": {"attention": attention, "selection": selection, "ffn": MLP}},
            "layers": [{"kind": "layer", "count": 1}],
        }
    )
    model = RefModel(spec)
    tokens = sample_tokens(model, 1, context)
    caches = model.make_caches(1, context, "bf16")
    args = {"execution": "gathered", "mla_mode": "auto", "phase": "prefill"}
    start = time.perf_counter()
    with torch.no_grad():
        run_span(model, args, Counter(enabled=False), tokens, caches, 1, context, CHUNK_SIZE, True)
    wall_s = time.perf_counter() - start
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"design": design, "context": context, "wall_s": wall_s, "peak_rss_bytes": peak_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=DEFAULT_CONTEXTS, help="Contexts in tokens.")
    parser.add_argument("--designs", nargs="+", choices=sorted(SELECTIONS), default=sorted(SELECTIONS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1).")
    parser.add_argument("--one", nargs=2, metavar=("DESIGN", "CONTEXT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.threads)))
        return

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch threads, "
          f"torch {torch.__version__}, chunk {CHUNK_SIZE}")
    print("| design | context | wall time (s) | peak RSS (MiB) | one N x N fp32 matrix (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for design in args.designs:
        for context in args.contexts:
            out = subprocess.run(
                [sys.executable, __file__, "--one", design, str(context), "--threads", str(args.threads)],
                capture_output=True, text=True,
            )
            if out.returncode != 0:
                sys.exit(f"{design} at {context} tokens failed:\n{out.stderr}")
            result = json.loads(out.stdout.splitlines()[-1])
            peak_mib = result["peak_rss_bytes"] / 2**20
            square_mib = context * context * 4 / 2**20
            print(f"| {design} | {context:,} | {result['wall_s']:.1f} | {peak_mib:.0f} | {square_mib:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
