"""Plan flags of ``ctxsim estimate`` (the per-device section) and ``ctxsim verify --nproc``."""

import json

import pytest

import ctxsim
from ctxsim.cli.main import main
from ctxsim.time import time_plan


def _estimate(*flags: str) -> list[str]:
    return ["estimate", "--model", "llama-3.1-8b", "--context", "4k", *flags]


def test_estimate_plan_prints_per_device(capsys):
    assert main(_estimate("--tp", "2", "--pp", "2")) == 0
    out = capsys.readouterr().out
    assert "per device, tp 2 x pp 2 on 4 devices" in out
    assert "pipeline bubble (prefill)" in out


def test_estimate_plan_json(capsys):
    assert main(_estimate("--tp", "2", "--pp", "2", "--phase", "decode", "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["per_device"]) == 4
    # Stage 0 sends one token's 4096 bf16 activations per decode step to stage 1, on each of 2 tp ranks.
    assert out["traffic"]["bytes_per_step"]["decode"]["comm.pp_send"] == 2 * 4096 * 2


def test_estimate_layer_split_gain(capsys):
    flags = ["--model", "glm-5.2", "--context", "8k", "--phase", "prefill", "--tp", "8", "--layer-split", "8"]
    assert main(["estimate", *flags]) == 0
    assert "LayerSplit KV capacity gain" in capsys.readouterr().out


def test_estimate_invalid_plan_exits_2(capsys):
    assert main(_estimate("--tp", "3")) == 2
    assert "tp 3 does not divide n_head 32" in capsys.readouterr().err


def test_estimate_ep_rule_exits_2(capsys):
    assert main(["estimate", "--model", "deepseek-v3", "--context", "4k", "--tp", "2", "--ep", "4"]) == 2
    assert "ep 4 exceeds the expert group (tp 2 = 2 ranks)" in capsys.readouterr().err


def test_estimate_pp_layers_parse_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(_estimate("--pp", "2", "--pp-layers", "16,x"))
    assert info.value.code == 2
    assert "invalid layer counts" in capsys.readouterr().err


def test_estimate_hardware_times_pp(capsys):
    assert main(_estimate("--pp", "2", "--hardware", "h100-sxm", "--json")) == 0
    timed = json.loads(capsys.readouterr().out)["time"]
    expected = time_plan(
        ctxsim.load_model("llama-3.1-8b"), ctxsim.Workload(context=4096), ctxsim.ParallelPlan(pp=2), "h100-sxm"
    )
    assert timed["ttft_s"] == pytest.approx(expected.ttft_s, rel=1e-12)
    assert timed["tpot_s"] == pytest.approx(expected.tpot_s, rel=1e-12)
    # One prefill pass and one decode sequence: both cross stage 0 and then stage 1.
    assert timed["ttft_s"] == pytest.approx(sum(timed["prefill"]["stage_s"]), rel=1e-12)
    assert timed["tpot_s"] == pytest.approx(sum(timed["decode"]["stage_s"]), rel=1e-12)
    assert len(timed["stages"]) == 2


def test_verify_suite_sizes(capsys):
    assert main(["verify", "--nproc", "3"]) == 2
    assert "runs 2, 4 or 8 processes" in capsys.readouterr().err


def test_verify_nproc_must_match_plan(capsys):
    assert main(["verify", "--nproc", "4", "--tp", "2"]) == 2
    assert "--nproc 4 differs from tp 2 x pp 1 x dp 1 x cp 1 = 2" in capsys.readouterr().err


def test_verify_model_needs_plan_flags(capsys):
    assert main(["verify", "--nproc", "2", "--model", "llama-3.1-8b"]) == 2
    assert "needs plan flags" in capsys.readouterr().err


def test_verify_needs_model_or_nproc(capsys):
    assert main(["verify"]) == 2
    assert "missing --model" in capsys.readouterr().err


def test_verify_nproc_runs_plan(capsys):
    flags = ["--nproc", "2", "--tp", "2", "--model", "llama-3.1-8b", "--context", "48", "--chunk-size", "24"]
    assert main(["verify", *flags]) == 0
    out = capsys.readouterr().out
    assert "1 plan on 2 processes, 0 with mismatches" in out
