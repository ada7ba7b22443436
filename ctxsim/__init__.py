"""ctxsim: what a long-context LLM costs, before you build or buy it.

Glossary (one vocabulary from YAML keys to DataFrame columns): ``n_layer`` layers, ``d_model``
hidden width, ``n_head`` query heads, ``n_kv_head`` key/value heads, ``head_dim`` head width,
``q_lora_rank``/``kv_lora_rank``/``qk_nope_head_dim``/``qk_rope_head_dim``/``v_head_dim`` for MLA,
``index_n_heads``/``index_head_dim``/``index_topk`` for DSA, ``window`` for sliding windows,
``block_size``/``topk_blocks`` for MSA. Units live in names: ``_flops``, ``_bytes``, ``_s``.

``import ctxsim`` never imports torch or streamlit.
"""

from ctxsim.counts import CostReport, estimate
from ctxsim.spec import ModelSpec, ParallelPlan, SpecError, Workload, load_model, preset_names
from ctxsim.spec.hardware import HardwareProfile, hardware_names, load_hardware
from ctxsim.sweep import sweep
from ctxsim.time import TimeReport, capacity_from_report, estimate_time, max_context_for, size

__version__ = "0.1.0"

__all__ = [
    "CostReport",
    "HardwareProfile",
    "ModelSpec",
    "ParallelPlan",
    "SpecError",
    "TimeReport",
    "Workload",
    "capacity_from_report",
    "estimate",
    "estimate_time",
    "hardware_names",
    "load_hardware",
    "load_model",
    "max_context_for",
    "preset_names",
    "size",
    "sweep",
]
