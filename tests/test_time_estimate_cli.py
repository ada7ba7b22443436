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
    assert out["plan"] == {"tp": 8, "dp": 1, "gpus": 8}


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
    assert json.loads(capsys.readouterr().out)["plan"] == {"tp": 8, "dp": 2, "gpus": 16}


def test_gpus_disagreeing_with_plan_exits_2(capsys):
    args = ["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--gpus", "4", "--tp", "8"]
    assert main(args) == 2
    assert "--gpus 4 differs from --tp 8 x --dp 1 = 8" in capsys.readouterr().err


def test_plan_flags_need_hardware(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--tp", "2"]) == 2
    assert "need --hardware" in capsys.readouterr().err


def test_overlap_out_of_range_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--hardware", "h100-sxm", "--overlap", "2"])
    assert info.value.code == 2


def test_estimate_without_hardware_unchanged(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "4k", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "time" not in out
