"""``ctxsim models`` and ``ctxsim show``: list presets and print a model's layer stack."""

from __future__ import annotations

import argparse

from ctxsim.cli.common import format_table, human_count, print_json
from ctxsim.spec import load_model, preset_names
from ctxsim.spec.layers import LayerSpec, MLAAttention, WindowSelection
from ctxsim.spec.model import ModelSpec


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="List the model presets with a one-line summary.")
    models.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    models.set_defaults(func=run_models)

    show = subparsers.add_parser("show", help="Print a model's layer stack, KV bytes and parameters.")
    show.add_argument("model", help="Preset name, ctxsim YAML path, or config.json path.")
    show.add_argument("--kv-dtype", default=None, help="KV dtype for the bytes column (bf16, fp8, fp8_ds_mla, nvfp4).")
    show.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    show.set_defaults(func=run_show)


def _summary(spec: ModelSpec) -> str:
    kinds = "; ".join(f"{n}x {spec.layer_kinds[k].describe()}" for k, n in spec.kind_counts.items())
    return f"{spec.n_layer} layers, d_model {spec.d_model}: {kinds}"


def _attention_shape(layer: LayerSpec) -> str:
    """Describe the attention heads and widths, such as '32 q / 8 kv heads x 128'."""
    att = layer.attention
    if isinstance(att, MLAAttention):
        q = f"q_lora {att.q_lora_rank}, " if att.q_lora_rank else ""
        return f"{att.n_head} heads, {q}kv_lora {att.kv_lora_rank} + rope {att.qk_rope_head_dim}"
    return f"{att.n_head} q / {att.n_kv_head} kv heads x {att.head_dim}"


ACTIVE_FOOTNOTE = "active: what one token runs, LM head counted, input embedding and MTP layers not."


def run_models(args: argparse.Namespace) -> int:
    specs = [load_model(name) for name in preset_names()]
    if args.json:
        print_json(
            [
                {
                    "name": s.name,
                    "n_layer": s.n_layer,
                    "n_params": s.n_params,
                    "n_active_params": s.n_active_params,
                    "summary": _summary(s),
                }
                for s in specs
            ]
        )
        return 0
    rows = [[s.name, human_count(s.n_params), human_count(s.n_active_params), _summary(s)] for s in specs]
    print(format_table(rows, ["model", "params", "active", "layers"], right_align_from=1, right_align_to=3))
    print(ACTIVE_FOOTNOTE)
    return 0


def _layer_rows(spec: ModelSpec, kv_dtype: str) -> list[dict]:
    rows = []
    start = 0
    for run in spec.layers:
        layer = spec.layer_kinds[run.kind]
        rows.append(
            {
                "first_layer": start,
                "last_layer": start + run.count - 1,
                "count": run.count,
                "kind": run.kind,
                "attention": layer.attention.variant,
                "selection": layer.selection.kind,
                "summary": layer.describe(),
                "attention_shape": _attention_shape(layer),
                "kv_bytes_per_token_per_layer": layer.kv_bytes_per_token(kv_dtype),
                "main_record_bytes": layer.main_record_bytes(kv_dtype),
                "index_record_bytes": layer.index_record_bytes(kv_dtype),
            }
        )
        start += run.count
    return rows


def run_show(args: argparse.Namespace) -> int:
    spec = load_model(args.model)
    kv_dtype = args.kv_dtype or spec.kv_dtype
    rows = _layer_rows(spec, kv_dtype)
    if args.json:
        print_json(
            {
                "name": spec.name,
                "n_layer": spec.n_layer,
                "n_params": spec.n_params,
                "n_active_params": spec.n_active_params,
                # Publishers count embeddings differently: both matrices, the LM head only, or neither.
                "params_by_embedding_convention": {
                    embeddings: {
                        "total": spec.count_params(active=False, embeddings=embeddings),
                        "active": spec.count_params(active=True, embeddings=embeddings),
                    }
                    for embeddings in ("both", "lm_head", "none")
                },
                "n_mtp_layers": spec.n_mtp_layers,
                "kv_dtype": kv_dtype,
                "kv_bytes_per_token": spec.kv_bytes_per_token(kv_dtype),
                "indexer_owner_layers": spec.indexer_owner_layers,
                "runs": rows,
                "spec": spec.model_dump(mode="json"),
            }
        )
        return 0
    print(f"{spec.name}: {spec.n_layer} layers, d_model {spec.d_model}, vocab {spec.vocab_size}")
    without = spec.count_params(active=True, embeddings="none")
    print(
        f"parameters: {human_count(spec.n_params)} total, {human_count(spec.n_active_params)} active "
        f"(LM head counted, input embedding not; {human_count(without)} without either)"
    )
    if spec.n_mtp_layers:
        layer_word = "layer" if spec.n_mtp_layers == 1 else "layers"
        print(f"multi-token prediction: {spec.n_mtp_layers} {layer_word} of kind {spec.mtp_layer_kind}")
    table = [
        [
            f"{r['first_layer']}-{r['last_layer']}" if r["count"] > 1 else str(r["first_layer"]),
            r["kind"],
            r["summary"],
            r["attention_shape"],
            str(r["kv_bytes_per_token_per_layer"]),
        ]
        for r in rows
    ]
    header = ["layers", "kind", "design", "attention", f"KV B/token/layer ({kv_dtype})"]
    print(format_table(table, header, right_align_from=4))
    owners = spec.indexer_owner_layers
    if owners:
        print(f"indexer owner layers ({len(owners)}): {', '.join(map(str, owners))}")
    print(f"KV bytes per token, all layers ({kv_dtype}): {spec.kv_bytes_per_token(kv_dtype):,}")
    windows = [layer.selection.window for layer in spec.layer_stack if isinstance(layer.selection, WindowSelection)]
    if windows:
        growing = sum(
            layer.kv_bytes_per_token(kv_dtype)
            for layer in spec.layer_stack
            if not isinstance(layer.selection, WindowSelection)
        )
        print(
            f"window layers keep at most {max(windows):,} tokens, so past that context the cache grows by "
            f"{growing:,} B per token"
        )
    return 0
