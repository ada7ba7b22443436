"""``ctxsim verify``: agreement on the presets, failure on a wrong formula, input errors."""

import json
import subprocess
import sys

import pytest

import ctxsim.counts.attention
from ctxsim.cli.main import main


def _json(capsys, argv: list[str]) -> tuple[int, object]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_verify_one_model_passes(capsys):
    code = main(["verify", "--model", "glm-5.2", "--context", "100", "--chunk-size", "30"])
    out = capsys.readouterr().out
    assert code == 0
    assert "0 mismatches" in out
    assert "attn.indexer.score" in out


def test_verify_json_lists_every_op(capsys):
    code, result = _json(capsys, ["verify", "--model", "minimax-m3", "--context", "80", "--json"])
    ops = {row["op"] for row in result["rows"]}
    assert code == 0
    assert result["mismatches"] == 0
    assert {"attn.indexer.pool", "attn.indexer.topk", "attn.core", "moe.experts", "kv.indexer"} <= ops


def test_verify_all_presets_pass(capsys):
    code = main(["verify", "--all"])
    out = capsys.readouterr().out
    assert code == 0
    assert "0 with mismatches" in out


def test_wrong_rope_formula_fails_on_rope(capsys, monkeypatch):
    # A deliberately wrong analytic constant: 4 FLOPs per rotated element instead of 3.
    monkeypatch.setattr(ctxsim.counts.attention, "ROPE_FLOPS_PER_ELEMENT", 4)
    code, result = _json(capsys, ["verify", "--model", "llama-3.1-8b", "--context", "64", "--json"])
    wrong = {(row["op"], row["quantity"]) for row in result["rows"] if row["difference"]}
    assert code == 1
    assert wrong == {("attn.rope", "other_flops")}


def test_wrong_key_count_fails_on_core(capsys, monkeypatch):
    # A deliberately wrong window: one key more per query than the window allows.
    original = ctxsim.counts.attention.selected_key_sum

    def off_by_one(selection, span, masked=False):
        return original(selection, span, masked) + (span.context - span.cached)

    monkeypatch.setattr(ctxsim.counts.attention, "selected_key_sum", off_by_one)
    code, result = _json(capsys, ["verify", "--model", "gemma-3-1b", "--context", "64", "--json"])
    wrong_ops = {row["op"] for row in result["rows"] if row["difference"]}
    assert code == 1
    assert wrong_ops == {"attn.core"}


def test_mismatch_table_names_the_op(capsys, monkeypatch):
    monkeypatch.setattr(ctxsim.counts.attention, "SOFTMAX_FLOPS_PER_SCORE", 6)
    code = main(["verify", "--model", "qwen3-32b", "--context", "64"])
    mismatch_lines = [line for line in capsys.readouterr().out.splitlines() if line.endswith("MISMATCH")]
    assert code == 1
    assert len(mismatch_lines) == 2  # prefill and decode attn.core other_flops
    assert all(" attn.core " in line and "other_flops" in line for line in mismatch_lines)


def test_all_with_full_scale_is_rejected(capsys):
    code = main(["verify", "--all", "--scale", "full"])
    assert code == 2
    assert "--scale small" in capsys.readouterr().err


def test_full_scale_beyond_memory_is_rejected(capsys):
    # 405B float32 weights (about 1.5 TiB) fit no single test machine.
    code = main(["verify", "--model", "llama-3.1-405b", "--scale", "full"])
    assert code == 2
    assert "use --scale small" in capsys.readouterr().err


def test_fp8_ds_mla_on_gqa_model_is_rejected(capsys):
    code = main(["verify", "--model", "llama-3.1-8b", "--kv-dtype", "fp8_ds_mla"])
    assert code == 2
    assert "fp8_ds_mla" in capsys.readouterr().err


def test_cached_context_beyond_context_is_rejected(capsys):
    code = main(["verify", "--model", "llama-3.1-8b", "--context", "64", "--cached-context", "64"])
    assert code == 2
    assert "cached_context" in capsys.readouterr().err


def test_verify_module_import_leaves_torch_unloaded():
    code = "import sys, ctxsim.cli.main, ctxsim.cli.verify; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_model_and_all_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--model", "qwen3-32b", "--all"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_full_scale_runs_a_small_yaml_model(capsys, tmp_path):
    # --scale full builds the spec as written; a small YAML model fits any machine.
    import yaml

    from refmodel.designs import design

    path = tmp_path / "msa.yaml"
    path.write_text(yaml.safe_dump(design("msa").model_dump(mode="json")))
    code = main(["verify", "--model", str(path), "--scale", "full", "--context", "60", "--chunk-size", "25"])
    out = capsys.readouterr().out
    assert code == 0
    assert "msa (full: 3 layers, d_model 64)" in out
