"""Exact, hardware-free counts: per-op FLOPs, bytes read and written, KV memory, weights.

``estimate(model, workload)`` returns a CostReport; docs/methodology.md states every formula.
"""

from ctxsim.counts.estimate import estimate, model_ops, report_to_dict
from ctxsim.counts.keys import Span, decode_span, keys_at, make_span
from ctxsim.counts.memory import kv_memory
from ctxsim.counts.names import OP_KIND, OP_NAMES
from ctxsim.counts.report import CostReport, KVMemory, Op

__all__ = [
    "OP_KIND",
    "OP_NAMES",
    "CostReport",
    "KVMemory",
    "Op",
    "Span",
    "decode_span",
    "estimate",
    "keys_at",
    "kv_memory",
    "make_span",
    "model_ops",
    "report_to_dict",
]
