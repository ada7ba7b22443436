"""Properties of the counts on random valid specs (hypothesis).

- Prefill counts, decode counts of non-MSA designs, and KV memory never decrease as N grows.
  MSA decode is the exception by design: at t = K*b + 1 the query's own block restarts, so the
  core attends fewer keys than at t = K*b (tested below).
- Window, DSA and MSA cores never exceed the dense core in FLOPs, and a decode step of a
  gathered sparse core never reads more cached K/V than the dense one.
- window >= N, top-k >= N and topk_blocks * block_size >= N give the dense core in gathered mode.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from ctxsim.counts import estimate, kv_memory
from ctxsim.spec import Workload, model_from_dict

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def attention_specs(draw):
    """A GQA or MLA attention part with small, valid shapes."""
    if draw(st.booleans()):
        n_kv_head = draw(st.sampled_from([1, 2, 4]))
        return {
            "kind": "gqa",
            "n_head": n_kv_head * draw(st.sampled_from([1, 2, 4])),
            "n_kv_head": n_kv_head,
            "head_dim": draw(st.sampled_from([8, 16, 64])),
        }
    return {
        "kind": "mla",
        "n_head": draw(st.sampled_from([1, 2, 8])),
        "q_lora_rank": draw(st.sampled_from([None, 32])),
        "kv_lora_rank": draw(st.sampled_from([16, 64])),
        "qk_nope_head_dim": draw(st.sampled_from([8, 16])),
        "qk_rope_head_dim": draw(st.sampled_from([4, 8])),
        "v_head_dim": draw(st.sampled_from([8, 16])),
    }


@st.composite
def selections(draw, attention):
    kinds = ["window", "dsa"] + (["msa"] if attention["kind"] == "gqa" else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "window":
        return {"kind": "window", "window": draw(st.integers(1, 300)), "sink_tokens": draw(st.integers(0, 8))}
    if kind == "dsa":
        return {
            "kind": "dsa",
            "index_n_heads": draw(st.integers(1, 8)),
            "index_head_dim": draw(st.sampled_from([8, 32])),
            "index_topk": draw(st.integers(1, 300)),
        }
    topk_blocks = draw(st.integers(1, 8))
    local = draw(st.integers(0, min(2, topk_blocks)))
    return {
        "kind": "msa",
        "block_size": draw(st.integers(1, 64)),
        "topk_blocks": topk_blocks,
        "index_n_heads": attention["n_kv_head"],
        "index_head_dim": draw(st.sampled_from([8, 32])),
        "init_blocks": draw(st.integers(0, topk_blocks - local)),
        "local_blocks": local,
    }


def ffn_specs():
    dense = st.builds(lambda width: {"kind": "dense", "intermediate_size": width}, st.sampled_from([32, 96]))
    moe = st.builds(
        lambda e, k, shared: {
            "kind": "moe", "n_routed_experts": e, "experts_per_token": min(k, e),
            "moe_intermediate_size": 16, "n_shared_experts": shared,
        },
        st.integers(1, 16), st.integers(1, 4), st.integers(0, 1),
    )
    return st.one_of(dense, moe)


@st.composite
def designs(draw):
    """A pair of one-layer-kind models that differ only in key selection: (sparse, dense)."""
    attention = draw(attention_specs())
    selection = draw(selections(attention))
    ffn = draw(ffn_specs())

    def model(sel):
        layer = {"attention": attention, "ffn": ffn}
        if sel is not None:
            layer["selection"] = sel
        return model_from_dict(
            {
                "name": "random",
                "d_model": 64,
                "vocab_size": 1000,
                "layer_kinds": {"layer": layer},
                "layers": [{"kind": "layer", "count": draw(st.integers(1, 3))}],
            }
        )

    return model(selection), model(None), selection


def core(model, context, phase, **workload):
    report = estimate(model, Workload(context=context, phase=phase, mla_mode="absorbed", **workload))
    return next(op for op in report.ops if op.name == "attn.core")


@SETTINGS
@given(designs(), st.integers(1, 3000), st.integers(1, 500), st.sampled_from([None, 64, 1000]))
def test_prefill_monotone(design, n, step, chunk):
    sparse, _, _ = design
    low = estimate(sparse, Workload(context=n, phase="prefill", chunk_size=chunk))
    high = estimate(sparse, Workload(context=n + step, phase="prefill", chunk_size=chunk))
    for quantity in ("flops", "matmul_flops", "bytes_read", "bytes_written"):
        assert high.total("prefill", quantity) >= low.total("prefill", quantity), quantity


@SETTINGS
@given(designs(), st.integers(1, 3000), st.integers(1, 500))
def test_decode_monotone_except_msa(design, n, step):
    sparse, _, selection = design
    if selection["kind"] == "msa":
        return
    low = estimate(sparse, Workload(context=n, phase="decode"))
    high = estimate(sparse, Workload(context=n + step, phase="decode"))
    assert high.total("decode", "flops") >= low.total("decode", "flops")
    assert high.total("decode", "bytes_read") >= low.total("decode", "bytes_read")


def test_msa_decode_drops_at_block_boundary():
    layer = {
        "attention": {"kind": "gqa", "n_head": 4, "n_kv_head": 2, "head_dim": 16},
        "selection": {"kind": "msa", "block_size": 8, "topk_blocks": 2, "index_n_heads": 2, "index_head_dim": 8},
        "ffn": {"kind": "dense", "intermediate_size": 32},
    }
    model = model_from_dict(
        {"name": "m", "d_model": 64, "vocab_size": 100, "layer_kinds": {"l": layer}, "layers": [{"kind": "l", "count": 1}]}
    )
    # t = 16 attends both full blocks (16 keys); t = 17 attends one full block and itself (9 keys).
    assert core(model, 16, "decode").matmul_flops == 4 * 4 * 16 * 16
    assert core(model, 17, "decode").matmul_flops == 4 * 4 * 16 * (8 + 1)


@SETTINGS
@given(designs(), st.integers(1, 5000), st.integers(1, 500), st.sampled_from(["need", "paged"]))
def test_kv_memory_monotone(design, n, step, policy):
    sparse, _, _ = design
    low = kv_memory(sparse, n, "bf16", policy, page_size=16)
    high = kv_memory(sparse, n + step, "bf16", policy, page_size=16)
    assert high.bytes_per_sequence >= low.bytes_per_sequence


@SETTINGS
@given(designs(), st.integers(1, 3000), st.sampled_from(["prefill", "decode"]))
def test_sparse_core_at_most_dense(design, n, phase):
    sparse, dense, _ = design
    sparse_core, dense_core = core(sparse, n, phase), core(dense, n, phase)
    assert sparse_core.matmul_flops <= dense_core.matmul_flops
    assert sparse_core.other_flops <= dense_core.other_flops
    if phase == "decode":
        assert sparse_core.kv_bytes_read <= dense_core.kv_bytes_read


@SETTINGS
@given(designs(), st.integers(1, 3000), st.sampled_from(["prefill", "decode"]))
def test_wide_selection_equals_dense(design, n, phase):
    sparse, dense, selection = design
    kind = selection["kind"]
    covers = (
        (kind == "window" and selection["window"] >= n)
        or (kind == "dsa" and selection["index_topk"] >= n)
        or (kind == "msa" and selection["topk_blocks"] * selection["block_size"] >= n)
    )
    if not covers:
        return
    assert core(sparse, n, phase).matmul_flops == core(dense, n, phase).matmul_flops


@SETTINGS
@given(designs(), st.integers(1, 400), st.sampled_from(["prefill", "decode"]))
def test_wide_window_equals_dense_everywhere(design, n, phase):
    _, dense, _ = design
    window = dense.model_dump(mode="json")
    window["layer_kinds"]["layer"]["selection"] = {"kind": "window", "window": n + 7}
    windowed = model_from_dict(window)
    a = estimate(windowed, Workload(context=n, phase=phase, chunk_size=64))
    b = estimate(dense, Workload(context=n, phase=phase, chunk_size=64))
    assert [op.to_dict() for op in a.ops] == [op.to_dict() for op in b.ops]
