"""ctxsim plot and ctxsim.plots: every plot kind writes a non-empty PNG and SVG with labelled axes."""

import subprocess
import sys

import pytest

import ctxsim
from ctxsim.cli.main import main
from ctxsim.plots import PLOTS, flops_figure, kv_figure, memory_figure, save_figure, time_figure
from ctxsim.spec import SpecError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Flags of each kind's CLI call: small grids so that the suite stays fast.
CLI_FLAGS = {
    "flops": ["--models", "glm-5,glm-5.2", "--context", "1k..1m", "--points", "12"],
    "kv": ["--models", "glm-5.2,gemma-3-27b", "--context", "1k..10m", "--points", "12"],
    "time": ["--models", "glm-5.2", "--context", "4k..256k", "--points", "5", "--hardware", "h200"],
    "memory": ["--models", "glm-5.2", "--context", "128k", "--batch", "8", "--plan", "tp=8", "--plan", "tp=8,dp=2",
               "--hardware", "h200"],
}


def test_plot_kinds_all_covered():
    assert set(CLI_FLAGS) == set(PLOTS)


@pytest.mark.parametrize("suffix", [".png", ".svg"])
@pytest.mark.parametrize("kind", sorted(CLI_FLAGS))
def test_plot_writes_file(kind, suffix, tmp_path, capsys):
    out = tmp_path / f"{kind}{suffix}"
    code = main(["plot", kind, *CLI_FLAGS[kind], "--out", str(out)])
    data = out.read_bytes()
    assert code == 0
    assert len(data) > 1000
    if suffix == ".png":
        assert data.startswith(PNG_SIGNATURE)
    else:
        assert b"<svg" in data[:2000]
    assert f"wrote the {kind} plot to {out}" in capsys.readouterr().err


def axis_labels(figure):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in figure.axes]


def test_kv_axes_have_units():
    figure = kv_figure(ctxsim.sweep("glm-5.2", "1k..1m", points=5))
    assert axis_labels(figure) == [("context (tokens; k = 1024)", "KV cache per sequence (GiB)")]


def test_flops_axes_have_units():
    figure = flops_figure(ctxsim.sweep("glm-5.2", "1k..1m", points=5))
    assert axis_labels(figure) == [
        ("context (tokens; k = 1024)", "FLOPs per new token (mean over the prefill)"),
        ("context (tokens; k = 1024)", "FLOPs per output token"),
    ]


def test_time_axes_have_units():
    figure = time_figure(ctxsim.sweep("glm-5.2", "4k..64k", points=3, hardware="h200"))
    labels = axis_labels(figure)
    assert labels[0][0] == "context (tokens; k = 1024)"
    assert labels[0][1] == "time (s)"  # a 64k prefill of GLM-5.2 on one H200 takes seconds
    assert labels[1][1] == "time (ms)"  # one decode step takes milliseconds


def test_memory_axes_have_units():
    frame = ctxsim.sweep("glm-5.2", "128k", plans=["tp=8"], hardware="h200")
    figure = memory_figure(frame)
    assert axis_labels(figure)[0] == ("model and plan", "memory per device (GiB)")


def test_time_plot_needs_hardware():
    with pytest.raises(SpecError, match="no time columns"):
        time_figure(ctxsim.sweep("glm-5.2", [4096]))


def test_memory_plot_needs_one_context():
    with pytest.raises(SpecError, match="takes one context"):
        memory_figure(ctxsim.sweep("glm-5.2", [4096, 8192]))


def test_save_rejects_unknown_format(tmp_path):
    figure = kv_figure(ctxsim.sweep("glm-5.2", [4096, 8192]))
    with pytest.raises(SpecError, match="name the file with .png or .svg"):
        save_figure(figure, tmp_path / "kv.pdf")


def test_plot_cli_time_without_hardware_exit_2(capsys, tmp_path):
    code = main(["plot", "time", "--models", "glm-5.2", "--context", "4k", "--out", str(tmp_path / "t.png")])
    assert code == 2
    assert "needs a hardware profile" in capsys.readouterr().err


def test_plots_module_imports_no_matplotlib():
    code = "import sys, ctxsim.plots; print('matplotlib' in sys.modules, 'pandas' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]
