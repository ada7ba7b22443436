"""ctxsim.sweep: the DataFrame equals a loop of scalar estimates, point by point, to 1e-12."""

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

import ctxsim
from ctxsim.counts.report import OP_KINDS
from ctxsim.spec import ParallelPlan, SpecError, Workload
from ctxsim.counts.parallel import device_report as parallel_device_report
from ctxsim.cli.main import main
from ctxsim.sweep import parse_plan, plan_label
from ctxsim.time import device_report, time_plan

REL = 1e-12

# One preset per attention design: MLA + DSA + IndexShare, MLA + DSA, GQA, GQA + window,
# MSA, MoE with mxfp4 experts and sinks.
DESIGNS = ["glm-5.2", "deepseek-v3.2", "qwen3-32b", "gemma-3-27b", "minimax-m3", "gpt-oss-20b"]

WORKLOADS = {
    "default": {},
    "chunked_cached": {"chunk_size": 8192, "cached_context": 512},
    "decode_paged": {"phase": "decode", "kv_policy": "paged", "page_size": 128},
}


def close(value, exact):
    return abs(float(value) - exact) <= REL * max(abs(exact), 1)


def expected_counts(report):
    """Sweep count columns, read from a CostReport of one point."""
    out = {}
    for phase in sorted({op.phase for op in report.ops}):
        for quantity in ("flops", "matmul_flops", "bytes_read", "bytes_written"):
            out[f"{phase}_{quantity}"] = report.total(phase, quantity)
        flops = report.by_kind(phase, "flops")
        read, written = report.by_kind(phase, "bytes_read"), report.by_kind(phase, "bytes_written")
        for kind in OP_KINDS:
            out[f"{phase}_{kind}_flops"] = flops.get(kind, 0)
            out[f"{phase}_{kind}_bytes_moved"] = read.get(kind, 0) + written.get(kind, 0)
    kv = report.kv_cache
    out["kv_bytes_per_sequence"] = kv.bytes_per_sequence
    for component, value in kv.by_component.items():
        out[f"kv_{component}_bytes_per_sequence"] = value
    out["kv_bytes_per_device"] = kv.bytes_per_device
    out["weights_bytes"] = report.weights_bytes
    out["activation_peak_bytes"] = report.activation_peak_bytes
    out["memory_bytes_per_device"] = report.weights_bytes + report.activation_peak_bytes + kv.bytes_per_device
    out["batch_per_replica"] = report.workload.batch
    return out


def random_grid(seed_text, n_contexts=5, n_batches=3, low=1025):
    rng = np.random.default_rng(zlib.crc32(seed_text.encode()))
    contexts = sorted({int(c) for c in rng.integers(low, 10 * 2**20, size=n_contexts)})
    batches = sorted({int(b) for b in rng.integers(1, 200, size=n_batches)})
    return contexts, batches


def assert_rows_match(frame, expected_at):
    for row in frame.itertuples(index=False):
        expected = expected_at(row)
        for column, value in expected.items():
            if column == "batch_per_replica" and column not in frame.columns:
                assert value == row.batch
            elif column in frame.columns:
                assert close(getattr(row, column), value), (column, row.context_tokens, row.batch)
            else:
                assert value == 0, (column, row.context_tokens, row.batch)


# --- counts against scalar estimates ---------------------------------------------------------


@pytest.mark.parametrize("workload_name", sorted(WORKLOADS))
@pytest.mark.parametrize("name", DESIGNS)
def test_sweep_equals_scalar_loop(name, workload_name):
    options = WORKLOADS[workload_name]
    contexts, batches = random_grid(f"{name}/{workload_name}")
    frame = ctxsim.sweep(name, contexts, batches=batches, **options)
    assert len(frame) == len(contexts) * len(batches)

    def expected_at(row):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch), **options)
        return expected_counts(ctxsim.estimate(name, workload))

    assert_rows_match(frame, expected_at)


def test_sweep_models_stack_in_order():
    frame = ctxsim.sweep(["glm-5", "glm-5.2"], [4096, 65536], batches=[1, 8], by_kind=False)
    assert list(frame["model"]) == ["glm-5"] * 4 + ["glm-5.2"] * 4
    assert list(frame["context_tokens"]) == [4096, 4096, 65536, 65536] * 2
    assert list(frame["batch"]) == [1, 8] * 4


def test_sweep_kv_qwen3_32b_by_hand():
    # Qwen3-32B: 64 layers x 8 KV heads x head_dim 128 x (K and V) x 2 bytes per token.
    frame = ctxsim.sweep("qwen3-32b", "32k", batches=4)
    assert frame["kv_bytes_per_sequence"].iloc[0] == 32768 * 64 * 8 * 128 * 2 * 2
    assert frame["kv_bytes_per_device"].iloc[0] == 4 * 32768 * 64 * 8 * 128 * 2 * 2


def test_sweep_new_tokens_subtract_cached():
    frame = ctxsim.sweep("qwen3-32b", [4096], cached_context=1000)
    assert frame["new_tokens"].iloc[0] == 4096 - 1000


# --- columns ---------------------------------------------------------------------------------


def test_sweep_columns_without_options():
    frame = ctxsim.sweep("glm-5.2", [4096], by_kind=False)
    assert list(frame.columns) == [
        "model", "context_tokens", "batch", "new_tokens",
        "prefill_flops", "prefill_matmul_flops", "prefill_bytes_read", "prefill_bytes_written",
        "decode_flops", "decode_matmul_flops", "decode_bytes_read", "decode_bytes_written",
        "kv_bytes_per_sequence", "kv_main_bytes_per_sequence", "kv_indexer_bytes_per_sequence",
        "kv_window_bytes_per_sequence", "kv_bytes_per_device",
        "weights_bytes", "activation_peak_bytes", "memory_bytes_per_device",
    ]


def test_sweep_decode_only_columns():
    frame = ctxsim.sweep("glm-5.2", [4096], phase="decode", hardware="h200")
    assert not [c for c in frame.columns if c.startswith("prefill_")]
    assert "new_tokens" not in frame.columns
    assert "ttft_s" not in frame.columns
    assert "tpot_s" in frame.columns


def test_sweep_id_columns_with_plans_and_hardware():
    frame = ctxsim.sweep("llama-3.1-8b", [4096], batches=[4], plans=[None, "tp=2,dp=2"], hardware=["h200", "b200"])
    assert list(frame.columns[:13]) == [
        "model", "plan", "tp", "pp", "ep", "dp", "cp", "devices", "hardware", "context_tokens", "batch",
        "new_tokens", "batch_per_replica",
    ]
    assert list(frame["plan"]) == ["tp=1", "tp=1", "tp=2,dp=2", "tp=2,dp=2"]
    assert list(frame["hardware"]) == ["h200", "b200", "h200", "b200"]
    assert list(frame["devices"]) == [1, 1, 4, 4]
    assert list(frame["batch_per_replica"]) == [4, 4, 2, 2]


def test_sweep_categorical_labels():
    frame = ctxsim.sweep(["glm-5", "glm-5.2"], [4096], plans=["tp=8"], hardware="h200")
    for column in ("model", "plan", "hardware"):
        assert str(frame[column].dtype) == "category", column


# --- plans and hardware ----------------------------------------------------------------------


@pytest.mark.parametrize("plan", ["tp=8", "tp=4,dp=2", "dp=3"])
@pytest.mark.parametrize("name", ["glm-5.2", "qwen3-32b", "gpt-oss-20b"])
def test_sweep_plans_equal_device_report(name, plan):
    contexts, batches = random_grid(f"{name}/{plan}", n_contexts=3, n_batches=3)
    batches = [b + 3 for b in batches]  # at least dp sequences
    frame = ctxsim.sweep(name, contexts, batches=batches, plans=plan)
    parallel = parse_plan(plan)

    def expected_at(row):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch))
        return expected_counts(device_report(ctxsim.load_model(name), workload, parallel))

    assert_rows_match(frame, expected_at)


@pytest.mark.parametrize("plan", [None, "tp=8,dp=2"])
def test_sweep_times_equal_estimate_time(plan):
    spec = ctxsim.load_model("glm-5.2")
    frame = ctxsim.sweep(spec, [4096, 300_000], batches=[2, 16], plans=plan, hardware="h200", overlap=0.5)
    for row in frame.itertuples(index=False):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch))
        if plan is None:
            report, devices = ctxsim.estimate(spec, workload), 1
        else:
            parallel = ParallelPlan(tp=8, dp=2)
            report, devices = device_report(spec, workload, parallel), parallel.world_size
        times = ctxsim.estimate_time(report, "h200", overlap=0.5, n_devices=devices, total_batch=int(row.batch))
        assert close(row.ttft_s, times.ttft_s)
        assert close(row.tpot_s, times.tpot_s)
        assert close(row.tokens_per_s, times.tokens_per_s)
        assert close(row.tokens_per_s_per_device, times.tokens_per_s_per_device)
        by_kind = sum(getattr(row, f"decode_{kind}_s") for kind in OP_KINDS if hasattr(row, f"decode_{kind}_s"))
        assert close(by_kind, times.decode.compute_s + times.decode.communication_s)


def test_sweep_memory_fits_against_h200():
    h200 = ctxsim.load_hardware("h200")
    frame = ctxsim.sweep("llama-3.1-8b", [8192, 8 * 2**20], hardware=h200, memory_fraction=0.9)
    limit = 0.9 * h200.memory_bytes
    assert list(frame["memory_fits"]) == list(frame["memory_bytes_per_device"] <= limit)
    assert list(frame["memory_fits"]) == [True, False]
    assert (frame["device_memory_bytes"] == h200.memory_bytes).all()


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize("plan", ["tp=8,pp=2", "tp=8,layer_split=8", "tp=2,dp=2,ep=4,attention_dp=true"])
def test_sweep_other_plans_equal_parallel_report(plan):
    spec = ctxsim.load_model("glm-5.2")
    frame = ctxsim.sweep(spec, [4096, 100_000], batches=[4, 16], plans=plan, hardware="h200")
    parallel = parse_plan(plan)

    def expected_at(row):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch))
        return expected_counts(parallel_device_report(spec, workload, parallel))

    assert_rows_match(frame, expected_at)


# Plans beyond tp and dp, timed point by point: (model, plan, workload options, contexts, batches).
# Chunked prefills give the pipeline several passes; batch 4 on pp 2 decodes as 2 micro-batches.
TIMED_PLANS = {
    "pp": ("glm-5.2", "tp=4,pp=2", {"chunk_size": 8192}, [4096, 100_000], [1, 4]),
    "pp_dp": ("qwen3-32b", "tp=2,pp=4,dp=2", {"chunk_size": 4096}, [8192, 65_536], [3, 8]),
    "ep_attention_dp": ("glm-5.2", "tp=2,dp=2,ep=4,attention_dp=true", {}, [4096, 100_000], [4, 9]),
    "ep_tp": ("gpt-oss-20b", "tp=4,ep=4", {}, [4096, 100_000], [2]),
    "cp_ring": ("qwen3-32b", "tp=4,cp=2", {"phase": "prefill"}, [4096, 65_536], [1, 2]),
    "cp_all_gather": ("glm-5.2", "tp=8,cp=2,cp_mode=all_gather,cp_sharding=contiguous", {"phase": "prefill"}, [8192, 131_072], [1]),
    "layer_split": ("glm-5.2", "tp=8,layer_split=8", {"chunk_size": 8192}, [4096, 100_000], [2]),
    "layer_split_pp": ("glm-5.2", "tp=8,pp=2,layer_split=4", {}, [4096, 100_000], [1, 4]),
    "tp_dp": ("glm-5.2", "tp=8,dp=2", {}, [4096, 100_000], [3, 16]),
}


def expected_times(times, phases):
    """Sweep time columns, read from the TimeReport of one point."""
    out = {}
    if "prefill" in phases:
        out["ttft_s"] = times.ttft_s
    if "decode" in phases:
        out["tpot_s"] = times.tpot_s
        out["tokens_per_s"] = times.tokens_per_s
        out["tokens_per_s_per_device"] = times.tokens_per_s_per_device
    for phase in phases:
        for kind in OP_KINDS:
            out[f"{phase}_{kind}_s"] = sum((t.total_s for t in times.phase_ops(phase) if t.kind == kind), 0.0)
    return out


@pytest.mark.parametrize("case", sorted(TIMED_PLANS))
def test_sweep_plan_times_equal_time_plan(case):
    name, plan, options, contexts, batches = TIMED_PLANS[case]
    spec = ctxsim.load_model(name)
    parallel = parse_plan(plan)
    frame = ctxsim.sweep(spec, contexts, batches=batches, plans=plan, hardware="h200", overlap=0.25, **options)
    phases = ("prefill", "decode") if options.get("phase", "both") == "both" else (options["phase"],)
    assert len(frame) == len(contexts) * len(batches)
    for row in frame.itertuples(index=False):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch), **options)
        times = time_plan(spec, workload, parallel, "h200", overlap=0.25)
        for column, value in expected_times(times, phases).items():
            point = (column, row.context_tokens, row.batch)
            if column in frame.columns:
                assert close(getattr(row, column), value), point
            else:
                assert value == 0, point


@pytest.mark.parametrize(
    ("name", "plan", "options"),
    [
        ("qwen3-32b", "tp=2,pp=4,dp=2", {"chunk_size": 4096}),
        ("qwen3-32b", "tp=4,cp=2", {"phase": "prefill"}),
        ("deepseek-v3.2", "tp=8,layer_split=8", {}),
    ],
)
def test_sweep_plan_memory_fits_equal_capacity(name, plan, options):
    spec = ctxsim.load_model(name)
    parallel = parse_plan(plan)
    # 4,096 tokens fit on each H200 under these plans; 8 M tokens do not.
    frame = ctxsim.sweep(spec, [4096, 8 * 2**20], batches=2, plans=plan, hardware="h200", **options)
    fits = []
    for row in frame.itertuples(index=False):
        workload = Workload(context=int(row.context_tokens), batch=int(row.batch), **options)
        fits.append(ctxsim.capacity_from_report(device_report(spec, workload, parallel), "h200").fits)
    assert list(frame["memory_fits"]) == fits
    assert fits == [True, False]


def test_sweep_pp_equals_estimate_cli(capsys):
    frame = ctxsim.sweep("llama-3.1-8b", [4096], batches=2, plans="tp=2,pp=2", hardware="h100-sxm", chunk_size=1024)
    flags = ["--context", "4096", "--batch", "2", "--chunk-size", "1024", "--tp", "2", "--pp", "2"]
    assert main(["estimate", "--model", "llama-3.1-8b", *flags, "--hardware", "h100-sxm", "--json"]) == 0
    cli_json = json.loads(capsys.readouterr().out)
    for column in ("ttft_s", "tpot_s", "tokens_per_s", "tokens_per_s_per_device"):
        assert close(frame[column].iloc[0], cli_json["time"][column]), column
    assert bool(frame["memory_fits"].iloc[0]) == cli_json["memory"]["fits"]


def test_sweep_times_nan_without_hardware():
    # None in a list of profiles is a block without times, next to a timed one.
    frame = ctxsim.sweep("glm-5.2", [4096], plans="tp=8,pp=2", hardware=[None, "h200"], by_kind=False)
    assert frame["ttft_s"].isna().tolist() == [True, False]
    assert frame["tpot_s"].isna().tolist() == [True, False]


def test_sweep_plan_label_round_trip():
    plan = ParallelPlan(tp=2, dp=2, ep=4, attention_dp=True, layer_split=2)
    assert parse_plan(plan_label(plan)) == plan


def test_sweep_rejects_context_option():
    with pytest.raises(SpecError, match="sweep axis"):
        ctxsim.sweep("glm-5.2", [4096], context=4096)


def test_sweep_rejects_unknown_option():
    with pytest.raises(SpecError, match="unknown key 'window'"):
        ctxsim.sweep("glm-5.2", [4096], window=4096)


def test_sweep_rejects_bad_batch():
    with pytest.raises(SpecError, match="batch values"):
        ctxsim.sweep("glm-5.2", [4096], batches=[0, 2])


def test_sweep_rejects_malformed_plan():
    with pytest.raises(SpecError, match="key=value"):
        ctxsim.sweep("glm-5.2", [4096], plans="tp8")


def test_sweep_rejects_cached_above_context():
    with pytest.raises(SpecError, match="cached_context"):
        ctxsim.sweep("glm-5.2", [4096, 8192], cached_context=5000)


# --- import cost -----------------------------------------------------------------------------


def test_import_loads_no_heavy_modules():
    code = "import sys, ctxsim; print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'streamlit') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
