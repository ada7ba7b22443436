"""Widget defaults and field help, in one place, so that no page depends on another having run.

Every page reads its starting values from ``DEFAULTS`` and keeps no other session state. Widgets
keep their value in the URL (``bind="query-params"``): the widget key is the query parameter, so
a view is shared by copying the link. A bound widget drops its parameter while it shows its
default, so ``DEFAULTS`` also defines what a bare link shows.
"""

from __future__ import annotations

from typing import Any


# Context lengths offered by the context slider: powers of two from 1K to 8M, then 10M.
CONTEXT_CHOICES: tuple[int, ...] = tuple(2**p for p in range(10, 24)) + (10_000_000,)
# Sweep range of the charts against context length.
SWEEP_MIN_TOKENS = 1024
SWEEP_MAX_TOKENS = 10_000_000

# Default value of every bound widget, by key. Keys are also the URL query parameters.
DEFAULTS: dict[str, Any] = {
    # Design explorer.
    "model": "glm-5.2",
    "design": "as released",
    "context": 131072,
    "context_exact": 0,
    "batch": 1,
    "kv_dtype": "model default",
    "kv_policy": "need",
    "page_size": 64,
    "execution": "gathered",
    "n_kv_head": 0,
    "points": 60,
    "breakdown": "flops",
    "op_phase": "decode",
    "window": 4096,
    "sink_tokens": 0,
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 2048,
    "index_topk_freq": 4,
    "index_skip_topk_offset": 1,
    "block_size": 128,
    "topk_blocks": 16,
    "dense_first": 0,
    "dense_every": 0,
    # Compare: how many designs, and the model of each slot (keys d1_model .. d4_model).
    "n_designs": 2,
    "d1_model": "glm-5",
    "d2_model": "glm-5.2",
    "d3_model": "deepseek-v3",
    "d4_model": "deepseek-v3.2",
    "compare_points": 100,
    # Deployment sizing.
    "s_model": "deepseek-v3.2",
    "hardware": "h200",
    "gpus": 8,
    "tp": 8,
    "pp": 1,
    "ep": 1,
    "dp": 1,
    "cp": 1,
    "layer_split": 1,
    "attention_dp": False,
    "chunk_size": 8192,
    "memory_fraction": 0.9,
    "overlap": 0.0,
    "time_points": 40,
    "target_ttft_s": 0.0,
    "target_tpot_s": 0.0,
    "max_gpus": 64,
    "search_chunk_size": 8192,
    # Calibration.
    "profile": "h200",
}

def default(key: str) -> Any:
    """Default value of the bound widget ``key``."""
    return DEFAULTS[key]


def field_help(model: type, name: str) -> str | None:
    """Return the ``Field(description=...)`` of a pydantic field, used as the widget tooltip."""
    field = model.model_fields.get(name)
    return field.description if field is not None else None
