"""Equivalences the reference model must satisfy, and its key-selection semantics.

Models run in float64 so that two computations of the same thing agree to about 1e-12; caches
keep their own layouts (bf16, fp8, nvfp4), which both sides of each comparison share.
"""

import pytest
import torch

from ctxsim.spec.model import ModelSpec
from refmodel import attention as attention_module
from refmodel import selection as selection_module
from refmodel.counter import Counter
from refmodel.designs import DESIGNS, MLA_DESIGNS, design
from refmodel.harness import run_span, sample_tokens
from refmodel.model import RefModel
from refmodel.selection import window_mask

TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(spec: ModelSpec) -> RefModel:
    return RefModel(spec, dtype=torch.float64)


def _run(model, tokens, first, last, caches, phase="prefill", chunk=None, execution="gathered", mla_mode="auto"):
    args = {"execution": execution, "mla_mode": mla_mode, "phase": phase}
    hidden, _ = run_span(model, args, Counter(enabled=False), tokens, caches, first, last, chunk, False)
    return hidden


def prefill(model, tokens, kv_dtype="bf16", **kw):
    """Hidden states of a prefill of every token, ``[B, N, d_model]``."""
    caches = model.make_caches(tokens.shape[0], tokens.shape[1], kv_dtype)
    with torch.no_grad():
        return _run(model, tokens, 1, tokens.shape[1], caches, **kw)


def decode_last(model, tokens, kv_dtype="bf16", **kw):
    """Hidden state of a decode step at position N after a prefill of N - 1 tokens, ``[B, 1, d]``."""
    n = tokens.shape[1]
    caches = model.make_caches(tokens.shape[0], n, kv_dtype)
    with torch.no_grad():
        _run(model, tokens, 1, n - 1, caches, **kw)
        return _run(model, tokens, n, n, caches, phase="decode", **kw)


def _with_selection(spec: ModelSpec, selection: dict) -> ModelSpec:
    data = spec.model_dump()
    for layer in data["layer_kinds"].values():
        layer["selection"] = selection
    return ModelSpec.model_validate(data)


def _dense_twin(model: RefModel) -> RefModel:
    """The same model with dense selection and the same weights (indexer weights dropped)."""
    twin = _model(_with_selection(model.spec, {"kind": "dense"}))
    missing, _ = twin.load_state_dict(model.state_dict(), strict=False)
    assert missing == []
    return twin


# ---------------------------------------------------------------------------------------------
# Covering selections equal dense attention


@pytest.mark.parametrize("name", ["dsa", "dsa_indexshare", "gqa_dsa", "msa", "msa_two_local"])
@pytest.mark.parametrize("execution", ["gathered", "masked"])
def test_covering_topk_equals_dense(name, execution):
    # DSA top-24 and MSA 3 blocks of 8 (4 for msa_two_local) cover a 24-token context.
    model = _model(design(name))
    tokens = sample_tokens(model, 2, 24)
    sparse = prefill(model, tokens, execution=execution)
    dense = prefill(_dense_twin(model), tokens)
    torch.testing.assert_close(sparse, dense, **TOL)


def test_partial_topk_differs_from_dense():
    # The same comparison past the top-k must differ, or the test above could not fail.
    model = _model(design("dsa"))
    tokens = sample_tokens(model, 1, 60)
    sparse = prefill(model, tokens)
    dense = prefill(_dense_twin(model), tokens)
    assert not torch.allclose(sparse[:, 30:], dense[:, 30:], **TOL)


@pytest.mark.parametrize("name", ["window", "window_learned_sinks", "mla_window"])
def test_covering_window_equals_dense(name):
    # Window 16 covers a 16-token context.
    model = _model(design(name))
    tokens = sample_tokens(model, 2, 16)
    windowed = prefill(model, tokens, chunk=5)
    dense_spec = _with_selection(model.spec, {"kind": "dense"})
    if name == "window_learned_sinks":
        # A learned sink changes the softmax, so compare against the same model with the
        # covering window instead of a dense twin: the cache and band must not drop anything.
        dense = prefill(model, tokens)
    else:
        twin = _model(dense_spec)
        twin.load_state_dict(model.state_dict())
        dense = prefill(twin, tokens)
    torch.testing.assert_close(windowed, dense, **TOL)


def test_window_past_its_size_differs_from_dense():
    model = _model(design("window"))
    tokens = sample_tokens(model, 1, 40)
    twin = _model(_with_selection(model.spec, {"kind": "dense"}))
    twin.load_state_dict(model.state_dict())
    assert not torch.allclose(prefill(model, tokens)[:, 20:], prefill(twin, tokens)[:, 20:], **TOL)


# ---------------------------------------------------------------------------------------------
# MLA modes, decode, chunking


@pytest.mark.parametrize("name", MLA_DESIGNS)
@pytest.mark.parametrize("execution", ["gathered", "masked"])
def test_absorbed_mla_equals_expanded(name, execution):
    model = _model(design(name))
    tokens = sample_tokens(model, 2, 50)
    expanded = prefill(model, tokens, chunk=16, execution=execution, mla_mode="expanded")
    absorbed = prefill(model, tokens, chunk=16, execution=execution, mla_mode="absorbed")
    torch.testing.assert_close(absorbed, expanded, **TOL)


DECODE_CASES = [
    (name, kv_dtype)
    for name in DESIGNS
    for kv_dtype in ["bf16", "fp8", "nvfp4"] + (["fp8_ds_mla"] if name in MLA_DESIGNS else [])
]


@pytest.mark.parametrize("name, kv_dtype", DECODE_CASES)
def test_decode_equals_last_prefill_row(name, kv_dtype):
    model = _model(design(name))
    tokens = sample_tokens(model, 2, 61)
    full = prefill(model, tokens, kv_dtype=kv_dtype)
    step = decode_last(model, tokens, kv_dtype=kv_dtype)
    torch.testing.assert_close(step[:, 0], full[:, -1], **TOL)


@pytest.mark.parametrize("name", list(DESIGNS))
def test_chunked_prefill_equals_one_chunk(name):
    model = _model(design(name))
    tokens = sample_tokens(model, 1, 57)
    torch.testing.assert_close(prefill(model, tokens, chunk=10), prefill(model, tokens), **TOL)


# ---------------------------------------------------------------------------------------------
# Selection semantics


def _capture_core_selections(monkeypatch) -> list:
    """Record (layer index, TileSelection) of every core call."""
    seen = []
    original = attention_module.attend

    def recording(counter, q, k, v, selection, scale, sinks=None):
        seen.append((counter.layer, selection))
        return original(counter, q, k, v, selection, scale, sinks)

    monkeypatch.setattr(attention_module, "attend", recording)
    return seen


def _counted_prefill(model, tokens, execution="gathered"):
    caches = model.make_caches(tokens.shape[0], tokens.shape[1], "bf16")
    args = {"execution": execution, "mla_mode": "auto", "phase": "prefill"}
    with torch.no_grad():
        run_span(model, args, Counter(), tokens, caches, 1, tokens.shape[1], 20, False)


def test_indexshare_layers_use_owner_slots(monkeypatch):
    # Layers: 0 owner, 1 shared, 2 shared, 3 owner, 4 shared.
    model = _model(design("dsa_indexshare"))
    seen = _capture_core_selections(monkeypatch)
    _counted_prefill(model, sample_tokens(model, 2, 60))
    slots = {}
    for layer, sel in seen:
        slots.setdefault(layer, []).append(sel.slots)

    def same(a: int, b: int) -> bool:
        return all(torch.equal(x, y) for x, y in zip(slots[a], slots[b], strict=True))

    assert same(1, 0)
    assert same(2, 0)
    assert same(4, 3)
    assert not same(3, 0)


def test_indexshare_masked_layers_use_owner_mask(monkeypatch):
    model = _model(design("dsa_indexshare"))
    seen = _capture_core_selections(monkeypatch)
    _counted_prefill(model, sample_tokens(model, 1, 60), execution="masked")
    masks = {}
    for layer, sel in seen:
        masks.setdefault(layer, []).append(sel.mask)
    assert all(torch.equal(a, b) for a, b in zip(masks[2], masks[0], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(masks[4], masks[3], strict=True))


def test_indexshare_shared_layer_has_no_indexer():
    model = _model(design("dsa_indexshare"))
    caches = model.make_caches(1, 8, "bf16")
    assert [layer.attention.indexer is None for layer in model.layers] == [False, True, True, False, True]
    assert [cache.index is None for cache in caches] == [False, True, True, False, True]


def _capture(monkeypatch, cls, method: str) -> list:
    """Record (args, result) of every call of ``cls.method``."""
    calls = []
    original = getattr(cls, method)

    def recording(self, *args):
        out = original(self, *args)
        calls.append((args, out))
        return out

    monkeypatch.setattr(cls, method, recording)
    return calls


@pytest.mark.parametrize("name, forced_local", [("msa", 1), ("msa_two_local", 2)])
def test_msa_picks_init_and_local_blocks(monkeypatch, name, forced_local):
    model = _model(design(name))
    sel = model.spec.layer_kinds["msa"].selection
    calls = _capture(monkeypatch, selection_module.MSAIndexer, "select")
    _counted_prefill(model, sample_tokens(model, 2, 100))
    init_missing, local_missing, wrong_count = 0, 0, 0
    for (counter, chunk, tile, q_pos), picks in calls:
        for c, t in enumerate(q_pos.tolist()):
            q_block = (t - 1) // sel.block_size
            for row in picks[:, :, c].reshape(-1, picks.shape[-1]).tolist():
                chosen = {b for b in row if b >= 0}
                init_missing += 0 not in chosen
                local_missing += not set(range(max(0, q_block - forced_local + 1), q_block + 1)) <= chosen
                wrong_count += len(chosen) != min(q_block + 1, sel.topk_blocks)
    assert init_missing == 0
    assert local_missing == 0
    assert wrong_count == 0


def test_dsa_selection_equals_brute_force(monkeypatch):
    model = _model(design("dsa"))
    k = model.spec.layer_kinds["dsa"].selection.index_topk
    calls = _capture(monkeypatch, selection_module.DSAIndexer, "select")
    _counted_prefill(model, sample_tokens(model, 2, 50))
    mismatched = 0
    checked = 0
    for (counter, chunk, tile, q_pos), slots in calls:
        q, weights, keys = chunk.q[:, tile], chunk.weights[:, tile], chunk.keys
        for b in range(q.shape[0]):
            for c, t in enumerate(q_pos.tolist()):
                # I(t, s) = sum_j w_j relu(q_j . k_s) over keys s = 1..t, the query itself included.
                scores = []
                for s in range(t):
                    dots = [float(q[b, c, j] @ keys[b, s]) for j in range(q.shape[2])]
                    scores.append(sum(float(weights[b, c, j]) * max(dot, 0.0) for j, dot in enumerate(dots)))
                # Ties go to the most recent key.
                best = sorted(range(t), key=lambda s: (scores[s], s), reverse=True)[: min(t, k)]
                chosen = {s for s in slots[b, 0, c].tolist() if s >= 0}
                mismatched += chosen != set(best)
                checked += 1
    assert checked == 2 * 50 * len(model.layers)
    assert mismatched == 0


def test_dsa_short_context_takes_every_key_itself_included(monkeypatch):
    # k counts the query itself: at t <= k the query attends keys 1..t, slots 0..t-1.
    model = _model(design("dsa"))
    calls = _capture(monkeypatch, selection_module.DSAIndexer, "select")
    _counted_prefill(model, sample_tokens(model, 1, 24))
    wrong = 0
    for (counter, chunk, tile, q_pos), slots in calls:
        for c, t in enumerate(q_pos.tolist()):
            wrong += {s for s in slots[0, 0, c].tolist() if s >= 0} != set(range(t))
    assert wrong == 0


def test_window_counts_the_query_itself():
    # Window 16 with 2 sinks: the query at position 20 attends keys 5..20 and sinks 1, 2.
    positions = torch.arange(1, 41)
    mask = window_mask(torch.tensor([20]), positions, window=16, sink_tokens=2)[0]
    assert positions[mask].tolist() == [1, 2] + list(range(5, 21))


def test_window_sinks_inside_window_count_once():
    # At position 10 the window 1..10 already contains the sinks.
    positions = torch.arange(1, 41)
    mask = window_mask(torch.tensor([10]), positions, window=16, sink_tokens=2)[0]
    assert positions[mask].tolist() == list(range(1, 11))
