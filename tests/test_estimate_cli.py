"""``ctxsim estimate``: table and JSON output, context parsing, and one-line errors."""

import json
import subprocess
import sys

import pytest

from ctxsim.cli.main import main


def run_json(capsys, *args):
    assert main(["estimate", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_keys(capsys):
    out = run_json(capsys, "--model", "glm-5.2", "--context", "1m")
    assert out["model"] == "glm-5.2"
    assert out["context"] == 1_048_576
    assert out["batch"] == 1
    assert type(out["kv_cache"]["bytes_per_sequence"]) is int
    assert set(out["kv_cache"]["by_component"]) == {"main", "indexer", "window"}
    for key in ("flops", "matmul_flops", "bytes_read"):
        assert type(out["prefill"][key]) is int, key
    assert type(out["decode"]["flops_per_token"]) is int
    assert out["decode"]["bytes_read_per_token"] > 0
    op = out["ops"][0]
    for key in ("name", "kind", "phase", "count", "flops", "bytes_read", "bytes_written"):
        assert key in op, key


def test_json_kv_matches_hand_count(capsys):
    # GLM-5.2 at 128k tokens, bf16: 78 layers x 576 x 2 B latent + 21 owners x 128 x 2 B index key.
    out = run_json(capsys, "--model", "glm-5.2", "--context", "128k")
    assert out["context"] == 131_072
    assert out["kv_cache"]["bytes_per_sequence"] == 131_072 * (78 * 576 * 2 + 21 * 128 * 2)


def test_json_plain_integer_context(capsys):
    out = run_json(capsys, "--model", "llama-3.1-8b", "--context", "5000", "--phase", "decode")
    assert out["context"] == 5000
    assert "prefill" not in out


def test_decode_per_token_divides_batch(capsys):
    out = run_json(capsys, "--model", "llama-3.1-8b", "--context", "8k", "--batch", "4", "--phase", "decode")
    assert out["decode"]["flops_per_token"] * 4 == out["decode"]["flops"]
    assert out["decode"]["bytes_read_per_token"] * 4 == out["decode"]["bytes_read"]


def test_kv_options(capsys):
    out = run_json(
        capsys, "--model", "deepseek-v3", "--context", "1000", "--kv-dtype", "fp8_ds_mla",
        "--kv-policy", "paged", "--page-size", "64",
    )
    assert out["kv_cache"]["bytes_per_sequence"] == 1024 * 61 * 656  # 16 pages of 64 tokens


def test_execution_masked(capsys):
    gathered = run_json(capsys, "--model", "deepseek-v3.2", "--context", "64k", "--phase", "decode")
    masked = run_json(capsys, "--model", "deepseek-v3.2", "--context", "64k", "--phase", "decode", "--execution", "masked")
    assert masked["decode"]["flops"] > gathered["decode"]["flops"]


def test_table_groups_layer_kinds(capsys):
    assert main(["estimate", "--model", "glm-5.2", "--context", "1m"]) == 0
    text = capsys.readouterr().out
    for label in ("dense_mlp x3", "moe_shared x57", "moe_owner x18", "attn.indexer.score", "total", "KV cache"):
        assert label in text, label


def test_fp8_ds_mla_on_gqa_exits_2(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "1k", "--kv-dtype", "fp8_ds_mla"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "fp8_ds_mla" in err


def test_cached_context_too_large_exits_2(capsys):
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "1k", "--cached-context", "1k"]) == 2
    assert "cached_context" in capsys.readouterr().err


def test_bad_context_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", "--model", "llama-3.1-8b", "--context", "lots"])
    assert exit_info.value.code == 2
    assert "invalid token count" in capsys.readouterr().err


def test_unknown_model_exits_2(capsys):
    assert main(["estimate", "--model", "no-such-model", "--context", "1k"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "ctxsim.cli.main", "estimate", "--model", "glm-5.2", "--context", "1m"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "decode step at context 1,048,576" in out


def test_context_above_max_context_noted(capsys):
    assert main(["estimate", "--model", "gemma-3-27b", "--context", "1m", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["context"] == 1_048_576
    assert captured.err == (
        "note: context 1,048,576 is above gemma-3-27b's max_context 131,072; "
        "the counts extrapolate past what the model supports\n"
    )


def test_context_within_max_context_quiet(capsys):
    assert main(["estimate", "--model", "gemma-3-27b", "--context", "128k"]) == 0
    assert capsys.readouterr().err == ""


def test_text_kv_line_names_policy(capsys):
    # Llama 3.1 8B: 32 layers x 2 x 8 KV heads x 128 x 2 B = 128 KiB per token, 16 GiB at 128k.
    assert main(["estimate", "--model", "llama-3.1-8b", "--context", "128k", "--kv-policy", "paged"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "MLA mode" not in lines[0]
    assert "KV cache (bf16, in pages of 64 tokens): 16 GiB per sequence; 16 GiB for the batch" in lines


def test_text_kv_line_splits_parts(capsys):
    # Gemma 3 27B at 128k: 10 global layers x 8 KiB x 131072 = 10 GiB, 52 local x 8 KiB x 1024 = 416 MiB.
    assert main(["estimate", "--model", "gemma-3-27b", "--context", "128k"]) == 0
    out = capsys.readouterr().out
    assert "KV cache (bf16, exact size): 10.4 GiB per sequence (main 10 GiB, window 416 MiB)" in out


def test_cached_context_with_decode_only_rejected(capsys):
    code = main(["estimate", "--model", "llama-3.1-70b", "--context", "4k", "--cached-context", "4k", "--phase", "decode"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].endswith("cached_context 4096 applies to the prefill only: leave it out with phase decode")
