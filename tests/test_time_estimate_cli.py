"""``ctxsim estimate`` with --hardware and plan flags: times per op, memory fit and capacity."""

import json

import pytest

from ctxsim.cli.main import main

LLAMA_128K_TP8 = ["estimate", "--model", "llama-3.1-70b", "--context", "128k", "--hardware", "h100-sxm", "--tp", "8"]


def test_estimate_with_hardware_prints_times(capsys):
    assert main(LLAMA_128K_TP8) == 0
    out = capsys.readouterr().out
    assert "TTFT" in out
    assert "TPOT" in out
    assert "comm.tp_all_reduce" in out
    assert "bound" in out
    assert "fits" in out


def test_estimate_json_has_time_capacity_memory(capsys):
    assert main([*LLAMA_128K_TP8, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["time"]["ttft_s"] > 0
    assert out["time"]["tpot_s"] > 0
    assert out["time"]["tokens_per_s"] == pytest.approx(1 / out["time"]["tpot_s"])
    assert out["capacity"]["max_sequences"] >= 1
    assert out["memory"]["fits"] is True
    assert (out["plan"]["tp"], out["plan"]["pp"], out["plan"]["dp"], out["plan"]["gpus"]) == (8, 1, 1, 8)


def test_estimate_json_ops_carry_bounds(capsys):
    assert main([*LLAMA_128K_TP8, "--json"]) == 0
    ops = json.loads(capsys.readouterr().out)["time"]["ops"]
    bounds = {op["bound"] for op in ops}
    assert "communication" in bounds
    assert bounds <= {"compute", "memory", "balanced", "launch", "communication"}


def test_gpus_alone_fills_domain_then_replicates(capsys):
    # 16 H100s in 8-GPU domains: tp 8 inside a node, 2 data-parallel replicas.
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--gpus", "16", "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["tp"], plan["dp"], plan["gpus"]) == (8, 2, 16)


def test_gpus_disagreeing_with_plan_exits_2(capsys):
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--gpus", "4", "--tp", "8"]
    assert main(args) == 2
    assert "--gpus 4 differs from --tp 8 x --dp 1 = 8" in capsys.readouterr().err


def test_plan_flags_without_hardware_count_per_device(capsys):
    # Plan flags alone give the per-device counts and no times.
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--tp", "2"]) == 0
    out = capsys.readouterr().out
    assert "per device, tp 2 on 2 devices" in out
    assert "TTFT" not in out


def test_gpus_needs_hardware(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--gpus", "2"]) == 2
    assert "--gpus needs --hardware" in capsys.readouterr().err


def test_gpus_sets_dp_from_plan(capsys):
    # 16 devices with tp 4 x pp 2 leave dp = 16 / 8 = 2.
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm",
            "--gpus", "16", "--tp", "4", "--pp", "2", "--json"]
    assert main(args) == 0
    plan = json.loads(capsys.readouterr().out)["plan"]
    assert (plan["tp"], plan["pp"], plan["dp"]) == (4, 2, 2)


def test_gpus_not_a_multiple_exits_2(capsys):
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm",
            "--gpus", "12", "--tp", "8"]
    assert main(args) == 2
    assert "--gpus 12 is not a multiple of --tp 8 = 8, so it cannot set --dp" in capsys.readouterr().err


def test_gpus_disagreeing_with_dp_exits_2(capsys):
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm",
            "--gpus", "8", "--tp", "2", "--pp", "2", "--dp", "4"]
    assert main(args) == 2
    assert "--gpus 8 differs from --tp 2 x --pp 2 x --dp 4 = 16" in capsys.readouterr().err


def test_pipeline_plan_prints_stages(capsys):
    args = ["estimate", "--model", "llama-3.1-70b", "--context", "32k", "--chunk-size", "8k", "--batch", "4",
            "--hardware", "h100-sxm", "--tp", "4", "--pp", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stages (each timed on its slowest device)" in out
    assert "comm.pp_send" in out
    assert "pipeline bubble (prefill)" in out


def test_pipeline_json_stage_times(capsys):
    # 80 layers over 2 stages: 0-39 and 40-79; 4 sequences decode as 2 micro-batches.
    args = ["estimate", "--model", "llama-3.1-70b", "--context", "32k", "--chunk-size", "8k", "--batch", "4",
            "--hardware", "h100-sxm", "--tp", "4", "--pp", "2", "--json"]
    assert main(args) == 0
    time = json.loads(capsys.readouterr().out)["time"]
    assert [s["layers"] for s in time["stages"]] == [[0, 39], [40, 79]]
    assert time["decode"]["micro_batches"] == 2
    assert time["tpot_s"] == pytest.approx(max(sum(time["decode"]["stage_s"]), 2 * max(time["decode"]["stage_s"])))


@pytest.mark.parametrize(
    "flags",
    [
        ["--tp", "8", "--ep", "8"],
        ["--dp", "8", "--ep", "8", "--attention-dp"],
        ["--tp", "8", "--layer-split", "8"],
        ["--tp", "4", "--cp", "2", "--cp-mode", "all_gather", "--phase", "prefill"],
    ],
)
def test_every_plan_is_timed(flags, capsys):
    args = ["estimate", "--model", "deepseek-v3", "--context", "8k", "--hardware", "h200", *flags, "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["time"]["ttft_s"] > 0
    names = {op["name"] for op in out["time"]["ops"] if op["kind"] == "collective"}
    assert names


def test_overlap_out_of_range_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--overlap", "2"])
    assert info.value.code == 2


def test_estimate_without_hardware_unchanged(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "time" not in out


def test_capacity_above_model_limit_noted(capsys):
    # Memory on 8 H100s has room for more than Llama 3.1 70B's 131,072-token max_position_embeddings.
    assert main(["estimate", "--model", "llama-3.1-70b", "--context", "128k", "--hardware", "h100-sxm", "--tp", "8"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("(memory allows ")
    assert last.endswith(" tokens, but llama-3.1-70b supports up to 131,072)")


def test_cp_over_window_model_has_capacity(capsys):
    # Mistral 7B keeps a 4096-token window, so of 4 cp ranks over 32k only the last keeps KV:
    # 4096 tokens x 32 layers x 2 x 8 KV heads x 128 x 2 B = 512 MiB. The others set no limit.
    argv = ["estimate", "--model", "mistral-7b-v0.1", "--context", "32k", "--hardware", "h100-sxm", "--cp", "4"]
    assert main([*argv, "--phase", "prefill"]) == 0
    out = capsys.readouterr().out
    assert "+ KV 512 MiB (1 sequence)" in out
    assert "capacity per replica: " in out


def test_memory_fraction_zero_rejected(capsys):
    argv = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--memory-fraction", "0"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "invalid memory fraction 0: use a value above 0 and at most 1" in capsys.readouterr().err


def test_json_scope_names_the_device(capsys):
    argv = ["estimate", "--model", "glm-5.2", "--context", "128k", "--tp", "8", "--json"]
    assert main(argv) == 0
    whole = json.loads(capsys.readouterr().out)
    assert (whole["scope"], whole["device_rank"]) == ("model", None)
    assert main([*argv, "--hardware", "h200"]) == 0
    device = json.loads(capsys.readouterr().out)
    assert (device["scope"], device["device_rank"]) == ("device", 0)
    # The device stores 1/8 of the routed experts, so its weights are far below the whole model's.
    assert device["weights_bytes"] < whole["weights_bytes"] / 4


def test_unchunked_prefill_that_does_not_fit_suggests_chunks(capsys):
    argv = ["estimate", "--model", "glm-5.2", "--context", "1m", "--hardware", "h200", "--tp", "8", "--pp", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out
    assert "(the prefill runs as one chunk of 1,048,576 tokens; a chunk size such as --chunk-size 8k" in out
    assert main([*argv, "--chunk-size", "8k"]) == 0
    assert "the prefill runs as one chunk" not in capsys.readouterr().out
