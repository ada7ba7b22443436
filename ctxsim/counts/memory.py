"""KV-cache memory per sequence and per device, by component, under two policies.

Components:
- ``main``: the main cache (K/V or MLA latent) of layers that keep every token.
- ``indexer``: the index keys of layers that own an indexer (DSA owners, MSA layers).
- ``window``: the main cache of sliding-window layers.

Policies:
- ``need``: what the architecture needs at context N. A window layer of window W and S sink
  tokens keeps min(N, W + S) tokens, and every other layer keeps N.
- ``paged``: what a paged serving engine reserves. Each layer's tokens are rounded up to whole
  pages of ``page_size`` tokens. A window layer is charged the most pages it holds at any point
  up to context N. vLLM v1's SlidingWindowManager frees every block that lies wholly before the
  window (``remove_skipped_blocks``), so the layer holds the pages from the one with token
  t - W + 1 to the one with token t. W consecutive tokens span at most ceil((W - 1) / p) + 1
  pages, and sink tokens keep their own pages; below that the layer is charged like a full one.
"""

from __future__ import annotations

from ctxsim.counts.arith import ceil_div, minimum
from ctxsim.counts.report import KVMemory, Number
from ctxsim.spec.errors import SpecError
from ctxsim.spec.layers import GQAAttention, WindowSelection
from ctxsim.spec.model import ModelSpec

KV_COMPONENTS = ("main", "indexer", "window")


def check_kv_dtype(spec: ModelSpec, kv_dtype: str) -> None:
    """Raise SpecError when ``kv_dtype`` does not apply to every layer of the model."""
    if kv_dtype != "fp8_ds_mla":
        return
    for kind, layer in spec.layer_kinds.items():
        if isinstance(layer.attention, GQAAttention):
            raise SpecError(
                f"kv dtype 'fp8_ds_mla' applies to MLA layers only, but layer kind '{kind}' of "
                f"{spec.name} is {layer.attention.variant}: use --kv-dtype fp8"
            )


def window_tokens_needed(selection: WindowSelection, context: Number) -> Number:
    """Tokens a window layer keeps at context N: min(N, W + sinks)."""
    return minimum(context, selection.window + selection.sink_tokens)


def window_tokens_paged(selection: WindowSelection, context: Number, page_size: int) -> Number:
    """Tokens of the most pages a paged engine holds for a window layer up to context N.

    At position t the layer holds ceil(t/p) - floor(max(0, t - W)/p) pages plus the sink pages
    it dropped; the maximum over t <= N is min(ceil(N/p), ceil((W - 1)/p) + 1 + ceil(S/p)).
    """
    span_pages = ceil_div(selection.window - 1, page_size) + 1
    sink_pages = ceil_div(selection.sink_tokens, page_size)
    return minimum(ceil_div(context, page_size), span_pages + sink_pages) * page_size


def kv_memory(
    spec: ModelSpec,
    context: Number,
    kv_dtype: str,
    policy: str = "need",
    page_size: int = 64,
    batch: int = 1,
) -> KVMemory:
    """KV-cache bytes of one sequence at ``context`` tokens, by component, and of ``batch`` sequences.

    NOTE: per device = per sequence x batch until parallel plans split the cache.
    """
    check_kv_dtype(spec, kv_dtype)
    full_tokens = ceil_div(context, page_size) * page_size if policy == "paged" else context
    by_component: dict[str, Number] = {name: 0 for name in KV_COMPONENTS}

    for kind, n_layers in spec.kind_counts.items():
        layer = spec.layer_kinds[kind]
        main_bytes = layer.main_record_bytes(kv_dtype)
        sel = layer.selection
        if isinstance(sel, WindowSelection):
            if policy == "paged":
                tokens = window_tokens_paged(sel, context, page_size)
            else:
                tokens = window_tokens_needed(sel, context)
            by_component["window"] += n_layers * tokens * main_bytes
        else:
            by_component["main"] += n_layers * full_tokens * main_bytes
        by_component["indexer"] += n_layers * full_tokens * layer.index_record_bytes(kv_dtype)

    per_sequence = by_component["main"] + by_component["indexer"] + by_component["window"]
    return KVMemory(per_sequence, by_component, policy, kv_dtype, per_sequence * batch)
