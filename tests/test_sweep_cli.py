"""ctxsim sweep on the command line: output formats, flags, and errors."""

import importlib.util
import json

import pandas as pd
import pytest

from ctxsim.cli.main import main


def run(capsys, *argv):
    code = main(["sweep", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sweep_csv_file(capsys, tmp_path):
    out = tmp_path / "sweep.csv"
    code, _, err = run(capsys, "--models", "glm-5,glm-5.2", "--context", "1k..10m", "--points", "20", "--out", str(out))
    frame = pd.read_csv(out)
    assert code == 0
    assert len(frame) == 2 * 20
    assert set(frame["model"]) == {"glm-5", "glm-5.2"}
    assert f"wrote 40 rows x {frame.shape[1]} columns to {out}" in err


def test_sweep_json_records(capsys, tmp_path):
    out = tmp_path / "sweep.json"
    code, _, _ = run(capsys, "--models", "qwen3-32b", "--context", "4k,32k", "--batch", "1,8", "--out", str(out))
    rows = json.loads(out.read_text())
    assert code == 0
    assert [(r["context_tokens"], r["batch"]) for r in rows] == [(4096, 1), (4096, 8), (32768, 1), (32768, 8)]
    assert rows[0]["kv_bytes_per_sequence"] == 4096 * 64 * 8 * 128 * 2 * 2


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_sweep_parquet_file(capsys, tmp_path):
    out = tmp_path / "sweep.parquet"
    code, _, _ = run(capsys, "--models", "glm-5.2", "--context", "4k,1m", "--no-by-kind", "--out", str(out))
    frame = pd.read_parquet(out)
    assert code == 0
    assert frame["context_tokens"].tolist() == [4096, 1024**2]
    assert "prefill_gemm_flops" not in frame.columns


def test_sweep_parquet_without_pyarrow(capsys, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real_find_spec(name, *a))
    out = tmp_path / "sweep.parquet"
    code, _, err = run(capsys, "--models", "glm-5.2", "--context", "4k", "--out", str(out))
    assert code == 2
    assert "needs pyarrow, which is not installed" in err
    assert not out.exists()


def test_sweep_csv_on_stdout(capsys):
    code, out, _ = run(capsys, "--models", "llama-3.1-8b", "--context", "4k", "--no-by-kind")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("model,context_tokens,batch,new_tokens,prefill_flops")
    assert len(lines) == 2


def test_sweep_plan_and_hardware_flags(capsys, tmp_path):
    out = tmp_path / "plans.csv"
    code, _, _ = run(
        capsys, "--models", "glm-5.2", "--context", "128k", "--batch", "16", "--plan", "tp=8", "--plan", "tp=8,dp=2",
        "--hardware", "h200", "--out", str(out),
    )
    frame = pd.read_csv(out)
    assert code == 0
    assert frame["plan"].tolist() == ["tp=8", "tp=8,dp=2"]
    assert frame["batch_per_replica"].tolist() == [16, 8]
    assert (frame["tpot_s"] > 0).all()


def test_sweep_workload_flags(capsys, tmp_path):
    out = tmp_path / "decode.csv"
    code, _, _ = run(
        capsys, "--models", "glm-5.2", "--context", "64k", "--phase", "decode", "--kv-dtype", "fp8_ds_mla",
        "--out", str(out),
    )
    frame = pd.read_csv(out)
    assert code == 0
    # GLM-5.2 fp8_ds_mla: 78 layers x 656-byte latent records + 21 indexer owners x 132-byte keys.
    assert frame["kv_bytes_per_sequence"].iloc[0] == 65536 * (78 * 656 + 21 * 132)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "x.xlsx"], "unknown output format '.xlsx'"),
        (["--batch", "0"], "invalid batch '0'"),
        (["--plan", "tp=3"], "tp 3 does not divide n_head"),
        (["--plan", "pp=100"], "pp 100"),
        (["--plan", "tp8"], "key=value"),
        (["--chunk-size", "big"], "invalid token count 'big'"),
        (["--models", "glm-5,,glm-5.2"], "single commas"),
    ],
)
def test_sweep_bad_flags_exit_2(capsys, argv, message):
    base = {"--models": "glm-5", "--context": "4k"}
    flags = dict(base)
    for key, value in zip(argv[::2], argv[1::2]):
        flags[key] = value
    code, _, err = run(capsys, *[item for pair in flags.items() for item in pair])
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def test_sweep_missing_folder_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "--models", "glm-5", "--context", "4k", "--out", str(tmp_path / "no" / "x.csv"))
    assert code == 2
    assert "does not exist" in err


def test_sweep_notes_contexts_above_max_context(capsys):
    code, _, err = run(capsys, "--models", "llama-3.1-70b", "--context", "128k,1m")
    assert code == 0
    assert err.strip().splitlines() == [
        "note: context 1,048,576 is above llama-3.1-70b's max_context 131,072; "
        "the counts extrapolate past what the model supports"
    ]


def test_sweep_columns_same_for_every_model(capsys):
    # Kind columns are written even when a model has no op of that kind (llama has no top-k select).
    _, llama, _ = run(capsys, "--models", "llama-3.1-70b", "--context", "4k")
    _, glm, _ = run(capsys, "--models", "glm-5", "--context", "4k")
    assert llama.splitlines()[0] == glm.splitlines()[0]
    assert "prefill_select_flops" in llama.splitlines()[0].split(",")
