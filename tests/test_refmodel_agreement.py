"""The reference model's counted work equals the analytic counts, op by op, exactly.

The matrix crosses every attention design of refmodel.designs with every KV layout that applies
(bf16, fp8, nvfp4, and fp8_ds_mla for MLA) and with gathered and masked execution. The designs
are MHA, GQA with biases, MQA with an MXFP4 MoE, window with sinks, window with learned sinks,
MLA with and without q_lora_rank, MLA with a window, DSA, DSA with IndexShare, DSA on GQA, MSA,
and MSA with two local blocks. Each case runs a chunked prefill on top of a cached context and a
decode step. MLA designs also run with mla_mode forced to expanded and to absorbed.
"""

import itertools

import pytest
import torch

from ctxsim.counts import estimate
from ctxsim.counts.names import OP_KIND
from ctxsim.spec import Workload
from refmodel.compare import compare_reports, mismatches
from refmodel.designs import DESIGNS, MLA_DESIGNS, design
from refmodel.harness import count_workload
from refmodel.model import RefModel


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices run fastest, and steadiest on shared cores, on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _kv_dtypes(name: str) -> list[str]:
    return ["bf16", "fp8", "nvfp4"] + (["fp8_ds_mla"] if name in MLA_DESIGNS else [])


MATRIX = [
    (name, kv_dtype, execution)
    for name in DESIGNS
    for kv_dtype, execution in itertools.product(_kv_dtypes(name), ("gathered", "masked"))
]


def _mismatches(name: str, **workload) -> list:
    spec = design(name)
    wl = Workload(**workload)
    return mismatches(compare_reports(estimate(spec, wl), count_workload(RefModel(spec), wl), spec))


@pytest.mark.parametrize("name, kv_dtype, execution", MATRIX)
def test_agreement_matrix(name, kv_dtype, execution):
    # 20 cached tokens, then 50 more in chunks of 16 (16, 16, 16, 2); batch 2; decode at 70.
    bad = _mismatches(
        name, phase="both", context=70, cached_context=20, chunk_size=16, batch=2,
        kv_dtype=kv_dtype, execution=execution,
    )
    assert bad == []


@pytest.mark.parametrize(
    "name, mla_mode, execution",
    list(itertools.product(MLA_DESIGNS, ("expanded", "absorbed"), ("gathered", "masked"))),
)
def test_agreement_mla_modes(name, mla_mode, execution):
    bad = _mismatches(
        name, phase="both", context=70, cached_context=20, chunk_size=16, batch=2,
        mla_mode=mla_mode, execution=execution,
    )
    assert bad == []


@pytest.mark.parametrize("name", list(DESIGNS))
def test_agreement_one_chunk(name):
    assert _mismatches(name, phase="both", context=45) == []


@pytest.mark.parametrize("name", list(DESIGNS))
def test_agreement_short_chunks_long_prefix(name):
    # 63 cached tokens then chunks of 7 (7 x 5 + 2): most chunks start past the window and top-k.
    assert _mismatches(name, phase="prefill", context=100, cached_context=63, chunk_size=7, execution="masked") == []


@pytest.mark.parametrize("name", list(DESIGNS))
def test_agreement_first_token_decode(name):
    assert _mismatches(name, phase="decode", context=1) == []


def test_torch_flop_counter_agrees_on_gemms():
    # torch.utils.flop_counter's formulas, applied to every aten matmul, charge each GEMM op
    # exactly what refmodel's shape-based counter charges.
    spec = design("dsa_indexshare")
    wl = Workload(phase="both", context=40, cached_context=8, chunk_size=16)
    report = count_workload(RefModel(spec), wl, watch_torch=True)
    gemms = {k: t for k, t in report.extras["tallies"].items() if OP_KIND[k[2]] == "gemm"}
    differing = {k: (t.matmul_flops, t.torch_matmul_flops) for k, t in gemms.items() if t.matmul_flops != t.torch_matmul_flops}
    assert len(gemms) > 0
    assert differing == {}


def test_torch_flop_counter_agrees_on_dense_decode_core():
    # A dense decode step has no padding, so the kernel count equals torch's rectangle.
    spec = design("gqa")
    report = count_workload(RefModel(spec), Workload(phase="decode", context=33), watch_torch=True)
    core = [t for (phase, layer, name), t in report.extras["tallies"].items() if name == "attn.core"]
    # QK^T and PV: 2 x 8 heads x 33 keys x (16 + 16) per layer.
    assert [t.matmul_flops for t in core] == [2 * 8 * 33 * (16 + 16)] * 2
    assert [t.torch_matmul_flops for t in core] == [2 * 8 * 33 * (16 + 16)] * 2


def test_counter_sees_sparse_selection():
    # One decode step of a DSA layer at context 70 attends min(70, 24) = 24 keys, not 70:
    # absorbed pair cost 2 x 4 heads x ((32 + 8) + 32).
    spec = design("dsa")
    report = count_workload(RefModel(spec), Workload(phase="decode", context=70))
    core = [t.matmul_flops for (phase, layer, name), t in report.extras["tallies"].items() if name == "attn.core"]
    assert core == [2 * 4 * ((32 + 8) + 32) * 24] * 2


def test_moe_bytes_rule_uses_touched_experts():
    # The MoE weight rule replaces the expected experts by the ones the run touched, and the
    # note gives their number.
    spec = design("mla")
    wl = Workload(phase="prefill", context=40, chunk_size=20)
    rows = compare_reports(estimate(spec, wl), count_workload(RefModel(spec), wl), spec)
    moe = [r for r in rows if r.op == "moe.experts" and r.quantity == "bytes_read"]
    assert len(moe) == 1
    assert "experts the run touched" in moe[0].note
    assert moe[0].ok
