"""Prefill memory is bounded: no mode builds an N x N tensor.

A dispatch mode inspects every tensor that a torch op returns during a one-chunk prefill of N
tokens. With the score tile shrunk to 2^14 elements, a tile contains at most 10 queries at N = 384,
so a tensor with two dimensions of N/2 or more can only be a square-in-N tensor. Model widths
stay below N/2 (d_model 64, at most 160 per token).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import refmodel.basic
from refmodel.counter import Counter
from refmodel.designs import design
from refmodel.harness import run_span, sample_tokens
from refmodel.model import RefModel

N = 384
TILE_ELEMENTS = 1 << 14


class SquareTensorWatch(TorchDispatchMode):
    """Record the shapes of returned tensors with two or more dimensions of at least ``size``."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.square: set[tuple[str, tuple[int, ...]]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and sum(dim >= self.size for dim in t.shape) >= 2:
                self.square.add((str(func), tuple(t.shape)))
        return out


@pytest.mark.parametrize("execution", ["gathered", "masked"])
@pytest.mark.parametrize("name", ["dsa_indexshare", "msa", "window"])
def test_prefill_builds_no_square_tensor(monkeypatch, name, execution):
    monkeypatch.setattr(refmodel.basic, "TILE_ELEMENTS", TILE_ELEMENTS)
    model = RefModel(design(name))
    tokens = sample_tokens(model, 1, N)
    caches = model.make_caches(1, N, "bf16")
    args = {"execution": execution, "mla_mode": "auto", "phase": "prefill"}
    with torch.no_grad(), SquareTensorWatch(N // 2) as watch:
        run_span(model, args, Counter(enabled=False), tokens, caches, 1, N, None, True)
    assert watch.square == set()
