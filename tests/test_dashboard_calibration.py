"""Calibration page: it shows what a hardware profile contains, from a shipped name or an upload."""

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import ctxsim  # noqa: E402

PAGE = Path(__file__).resolve().parents[1] / "dashboards" / "views" / "calibration.py"


def _efficiency(at: AppTest):
    tables = [d.value for d in at.dataframe if "ridge_flops_per_byte" in d.value.columns]
    assert len(tables) == 1
    return tables[0].set_index("kind")


def _run_upload(name: str, content: bytes) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("profile_upload").upload(name, content)
    at.run()
    assert not at.exception, at.exception
    return at


def test_calibration_h200_efficiency():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    table = _efficiency(at)
    profile = ctxsim.load_hardware("h200")
    assert table.loc["gemm", "compute"] == profile.efficiency.gemm.compute
    assert table.loc["gather", "memory"] == profile.efficiency.gather.memory
    # Ridge of gemm on the H200 profile: 989.4e12 x 0.8 / (4.8e12 x 0.8) = 206.125 FLOPs per byte.
    assert table.loc["gemm", "ridge_flops_per_byte"] == pytest.approx(989.4e12 * 0.8 / (4.8e12 * 0.8))


def test_calibration_other_profile():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("profile").set_value("mi300x")
    at.run()
    assert not at.exception, at.exception
    profile = ctxsim.load_hardware("mi300x")
    assert _efficiency(at).loc["attention", "compute"] == profile.efficiency.attention.compute
    assert any(h.value.startswith("mi300x") for h in at.subheader)


def _calibrated_h200() -> dict:
    """The H200 profile as a calibration run would write it: fitted curves and a run record."""
    data = ctxsim.load_hardware("h200").model_dump(mode="json")
    data["name"] = "h200-calibrated"
    data["efficiency"]["gemm"]["compute"] = 0.71
    data["efficiency_curves"] = {
        "gemm": {
            "compute_size_flops": [1e6, 1e9, 1e12],
            "compute": [0.05, 0.4, 0.71],
            "memory_size_bytes": [1e4, 1e8],
            "memory": [0.1, 0.8],
            "source": "test fit",
        }
    }
    run = {
        "base_profile": "h200",
        "torch_dtype": "bfloat16",
        "clock": "CUDA events",
        "grid": "quick",
        "shapes": ["a", "b", "c"],
        "repeats": "3 warm-up, 10 timed",
        "samples": 120,
        "duration_s": 95.0,
        "residuals": {"gemm": {"samples": 80, "median_abs_error": 0.04, "max_abs_error": 0.19}},
    }
    data["provenance"] = {
        "kind": "calibration",
        "date": "2026-12-04",
        "device": "NVIDIA H200",
        "software": {"torch": "2.13.0"},
        "calibration": run,
    }
    return data


def test_calibration_calibrated_upload():
    at = _run_upload("h200-calibrated.yaml", yaml.safe_dump(_calibrated_h200()).encode())
    assert _efficiency(at).loc["gemm", "compute"] == 0.71
    assert any("Calibrated on NVIDIA H200" in i.value for i in at.info)
    fit_error = [d.value for d in at.dataframe if "median_abs_error" in d.value.columns][0].set_index("kind")
    assert fit_error.loc["gemm", "samples"] == 80
    assert fit_error.loc["gemm", "max_abs_error"] == 0.19
    run = [d.value for d in at.dataframe if "clock" in d.value.columns][0].iloc[0]
    assert run["shapes"] == 3
    assert run["samples"] == 120
    assert "Fitted efficiency against op size" in [h.value for h in at.subheader]


def test_calibration_datasheet_has_no_fit_sections():
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    headers = [h.value for h in at.subheader]
    assert "Fitted efficiency against op size" not in headers
    assert "Calibration run" not in headers


@pytest.mark.parametrize(
    "name, content",
    [("x.yaml", b"name: X\n"), ("x.yaml", b"- a list\n"), ("x.yaml", b"name: [\n"), ("x.json", b"{}")],
)
def test_calibration_invalid_upload(name, content):
    at = _run_upload(name, content)
    assert any(f"upload {name}" in e.value for e in at.error)
    assert not at.metric


CASES = {
    "cases": [
        {"design": "gqa", "phase": "prefill", "context": 1024, "measured_s": 0.010, "predicted_s": 0.012},
        {"design": "gqa", "phase": "decode", "context": 4096, "measured_s": 0.002, "predicted_s": 0.0018},
        {"design": "mla", "phase": "prefill", "context": 16384, "measured_s": 0.200, "predicted_s": 0.250},
    ]
}


def _run_cases(name: str, content: bytes) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.run()
    at.get_by_key("cases_upload").upload(name, content)
    at.run()
    assert not at.exception, at.exception
    return at


def test_calibration_cases_errors():
    at = _run_cases("cases.json", json.dumps(CASES).encode())
    metrics = {m.label: m.value for m in at.metric}
    # Relative errors: +0.2, -0.1, +0.25; mean of the absolute values 0.55 / 3 = 18.3%.
    assert metrics["cases"] == "3"
    assert metrics["mean absolute error"] == "18.3%"
    assert metrics["largest absolute error"] == "25.0%"
    table = [d.value for d in at.dataframe if "predicted_s" in d.value.columns][0]
    assert list(table["error"].round(12)) == [0.2, -0.1, 0.25]


def test_calibration_cases_csv():
    at = _run_cases("cases.csv", b"measured_s,predicted_s\n0.5,0.4\n")
    assert {m.label: m.value for m in at.metric}["mean absolute error"] == "20.0%"


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("cases.csv", b"a,b\n1,2\n", "need the columns measured_s, predicted_s"),
        ("cases.json", b'{"cases": 3}', "expected a list of case objects"),
        ("cases.json", b"[{", "unreadable cases"),
        ("cases.csv", b"measured_s,predicted_s\n0,1\n", "must be positive seconds"),
        ("cases.txt", b"x", "unsupported file type"),
    ],
)
def test_calibration_invalid_cases_keep_page(name, content, fragment):
    at = _run_cases(name, content)
    assert any(fragment in e.value for e in at.error)
    # The profile's own sections still render.
    assert _efficiency(at).loc["gemm", "compute"] == ctxsim.load_hardware("h200").efficiency.gemm.compute
