"""Validated descriptions of models, workloads and parallel plans."""

from ctxsim.spec.errors import SpecError
from ctxsim.spec.layers import (
    DenseFFN,
    DenseSelection,
    DSASelection,
    GQAAttention,
    LayerSpec,
    MLAAttention,
    MoEFFN,
    MSASelection,
    WindowSelection,
)
from ctxsim.spec.load import load_model, model_from_dict, preset_names
from ctxsim.spec.model import LayerRun, ModelSpec
from ctxsim.spec.plan import ParallelPlan
from ctxsim.spec.workload import Workload

__all__ = [
    "DSASelection",
    "DenseFFN",
    "DenseSelection",
    "GQAAttention",
    "LayerRun",
    "LayerSpec",
    "MLAAttention",
    "MSASelection",
    "MoEFFN",
    "ModelSpec",
    "ParallelPlan",
    "SpecError",
    "WindowSelection",
    "Workload",
    "load_model",
    "model_from_dict",
    "preset_names",
]
