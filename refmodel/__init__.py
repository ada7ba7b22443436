"""Reference model: every ctxsim design runnable in PyTorch, with its work counted op by op.

A RefModel is built from the same ModelSpec as the analytic counts, at full size or scaled down
to run on a CPU (``build_model``). ``count_workload`` runs it on a Workload and returns a
CostReport of what it really did, under the op names of ``ctxsim.counts``. ``compare_reports``
lines that report up with ``ctxsim.estimate`` op by op.

Shape legend: B batch, C query tokens of a chunk, S keys held in a cache view, H query heads,
G KV heads (groups), D head width, K selected keys per query.

``refmodel`` imports torch and ctxsim; ctxsim never imports refmodel.
"""

from refmodel.build import build_model, scale_spec
from refmodel.compare import compare_reports
from refmodel.harness import count_workload
from refmodel.model import RefModel

__all__ = ["RefModel", "build_model", "compare_reports", "count_workload", "scale_spec"]
