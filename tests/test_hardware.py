"""Hardware profiles: every shipped YAML validates, datasheet numbers, and one error per rule."""

import json
from pathlib import Path

import pytest

from ctxsim.cli.main import main
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import (
    PROFILE_DIR,
    HardwareProfile,
    hardware_from_dict,
    hardware_names,
    load_hardware,
)

REQUIRED = {
    "a100-40gb-sxm", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h800", "h20", "h200", "b200", "gb200", "b300",
    "l40s", "rtx-4090", "rtx-5090", "mi300x", "mi325x", "mi355x", "gaudi3", "tpu-v5e", "tpu-v5p", "tpu-v6e",
    "ascend-910b", "cpu",
}


def _base() -> dict:
    """A valid profile as a plain mapping, to break one rule at a time."""
    return load_hardware("h100-sxm").model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Shipped profiles


def test_required_profiles_present():
    assert REQUIRED <= set(hardware_names())


@pytest.mark.parametrize("name", hardware_names())
def test_profile_loads_with_matching_name(name):
    profile = load_hardware(name)
    assert profile.name == name
    assert name == name.lower()


@pytest.mark.parametrize("name", ["ascend-910b", "h20", "rtx-4090", "rtx-5090", "cpu"])
def test_secondary_only_profiles_are_low_confidence(name):
    assert load_hardware(name).confidence == "low"


def test_profiles_ship_inside_package():
    # A non-editable install only carries package data, so the YAMLs live under ctxsim/.
    assert PROFILE_DIR.parent.name == "ctxsim"
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert '"hw_profiles/*.yaml"' in pyproject


def test_h100_sxm_datasheet_numbers():
    # NVIDIA H100 page (via stas00 ml-engineering): 1,979 TF BF16 with sparsity, so 989.4 dense;
    # NVLink4 is 18 links x 25 GB/s per direction; nvidia-smi reports 81,559 MiB.
    h100 = load_hardware("h100-sxm")
    assert h100.peak_flops["bf16"] == 989.4e12
    assert h100.scale_up.bandwidth_bytes_per_s == 18 * 25e9
    assert h100.memory_bytes == 81_559 * 2**20


def test_b200_nvlink5_is_18_links_of_50_gb_per_s():
    assert load_hardware("b200").scale_up.bandwidth_bytes_per_s == 18 * 50e9


def test_mi300x_pair_gets_one_link():
    # MI300X xGMI: 7 links x 64 GB/s per direction in an 8-GPU full mesh.
    up = load_hardware("mi300x").scale_up
    assert up.group_bandwidth_bytes_per_s(2) == 64e9
    assert up.group_bandwidth_bytes_per_s(4) == 3 * 64e9
    assert up.group_bandwidth_bytes_per_s(8) == 7 * 64e9


def test_switch_pair_gets_full_bandwidth():
    assert load_hardware("h100-sxm").scale_up.group_bandwidth_bytes_per_s(2) == 450e9


def test_torus_ring_uses_two_links():
    # TPU v5e: 4.5e10 B/s one way per ICI link; a bidirectional ring on one axis uses two.
    assert load_hardware("tpu-v5e").scale_up.group_bandwidth_bytes_per_s(4) == 2 * 45e9


def test_peak_fallback_to_bf16_without_fp8():
    assert load_hardware("a100-80gb-sxm").peak_flops_for("fp8") == 312e12


def test_peak_fallback_fp4_weights_on_hopper():
    assert load_hardware("h100-sxm").peak_flops_for("nvfp4") == 989.4e12


def test_peak_fp4_on_blackwell():
    assert load_hardware("b200").peak_flops_for("mxfp4") == 9000e12


def test_fp32_matmul_runs_on_vector_units():
    assert load_hardware("h100-sxm").peak_flops_for("fp32") == 67e12


def test_unknown_compute_dtype_raises():
    with pytest.raises(ValueError, match="unknown compute dtype 'fp6'"):
        load_hardware("h100-sxm").peak_flops_for("fp6")


def test_h100_ridge_point():
    # 989.4e12 x 0.8 (GEMM compute) over 3.35e12 x 0.8 (GEMM memory) FLOPs per byte.
    assert load_hardware("h100-sxm").ridge_point() == pytest.approx(989.4e12 * 0.8 / (3.35e12 * 0.8))


# ---------------------------------------------------------------------------------------------
# Validation: one rule each, one-line messages


def _error(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        hardware_from_dict(data, source="test.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_rejected():
    data = _base()
    data["hbm_gb"] = 80
    assert "unknown key 'hbm_gb'" in _error(data)


def test_uppercase_name_rejected():
    data = _base()
    data["name"] = "H100"
    assert "invalid 'name'" in _error(data)


def test_missing_bf16_peak_rejected():
    data = _base()
    del data["peak_flops"]["bf16"]
    assert "needs a 'bf16' entry" in _error(data)


def test_unknown_peak_dtype_rejected():
    data = _base()
    data["peak_flops"]["fp6"] = 1e15
    assert "peak_flops.fp6" in _error(data)


def test_efficiency_above_one_rejected():
    data = _base()
    data["efficiency"]["gemm"]["compute"] = 1.2
    assert "efficiency.gemm.compute" in _error(data)


def test_missing_source_rejected():
    data = _base()
    del data["sources"]["memory_bytes"]
    assert "sources lacks memory_bytes" in _error(data)


def test_unknown_source_key_rejected():
    data = _base()
    data["sources"]["nvlink"] = "somewhere"
    assert "sources has unknown keys nvlink" in _error(data)


def test_p2p_above_total_rejected():
    data = _base()
    data["scale_up"]["p2p_bandwidth_bytes_per_s"] = 900e9
    assert "exceeds bandwidth_bytes_per_s" in _error(data)


def test_mesh_without_p2p_rejected():
    data = _base()
    data["scale_up"]["topology"] = "full_mesh"
    data["scale_up"]["in_switch_reduction"] = None
    assert "needs p2p_bandwidth_bytes_per_s" in _error(data)


def test_in_switch_on_mesh_rejected():
    data = _base()
    data["scale_up"]["topology"] = "full_mesh"
    data["scale_up"]["p2p_bandwidth_bytes_per_s"] = 64e9
    assert "in_switch_reduction needs topology 'switch'" in _error(data)


def test_in_switch_beyond_domain_rejected():
    data = _base()
    data["scale_up"]["in_switch_reduction"]["min_ranks"] = 16
    assert "exceeds domain_size 8" in _error(data)


def test_uncertain_profile_without_note_rejected():
    data = _base()
    data["confidence"] = "medium"
    data["confidence_note"] = ""
    assert "needs a confidence_note" in _error(data)


def test_calibration_without_device_rejected():
    data = _base()
    data["provenance"] = {"kind": "calibration", "date": "2027-01-05"}
    assert "needs 'device' and 'software'" in _error(data)


def test_calibration_with_device_accepted():
    data = _base()
    data["provenance"] = {
        "kind": "calibration",
        "date": "2027-01-05",
        "device": "NVIDIA H100 80GB HBM3",
        "software": {"torch": "2.13.0", "cuda": "12.8"},
    }
    assert hardware_from_dict(data).provenance.device == "NVIDIA H100 80GB HBM3"


# ---------------------------------------------------------------------------------------------
# Loading


def test_load_from_path(tmp_path):
    data = _base()
    data["name"] = "my-h100"
    path = tmp_path / "my-h100.yaml"
    path.write_text(json.dumps(data))  # JSON is valid YAML
    assert load_hardware(path).name == "my-h100"


def test_missing_file_rejected(tmp_path):
    with pytest.raises(SpecError, match="hardware file not found"):
        load_hardware(tmp_path / "nope.yaml")


def test_malformed_yaml_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_hardware(path)


def test_unknown_name_lists_profiles():
    with pytest.raises(SpecError, match="unknown hardware 'h1000'.*h100-sxm"):
        load_hardware("h1000")


def test_shipped_name_must_match_file(tmp_path, monkeypatch):
    import ctxsim.spec.hardware as hardware

    data = _base()
    data["name"] = "other-name"
    (tmp_path / "renamed-profile.yaml").write_text(json.dumps(data))
    monkeypatch.setattr(hardware, "PROFILE_DIR", tmp_path)
    with pytest.raises(SpecError, match="differs from the file name"):
        hardware.load_hardware("renamed-profile")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_lists_every_profile(capsys):
    assert main(["hardware"]) == 0
    out = capsys.readouterr().out
    for name in hardware_names():
        assert name in out


def test_cli_json_list(capsys):
    assert main(["hardware", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == hardware_names()


def test_cli_show_json_round_trips(capsys):
    assert main(["hardware", "h200", "--json"]) == 0
    profile = HardwareProfile.model_validate(json.loads(capsys.readouterr().out))
    assert profile == load_hardware("h200")


def test_cli_show_prints_sources(capsys):
    assert main(["hardware", "mi300x"]) == 0
    out = capsys.readouterr().out
    assert "sources:" in out
    assert "efficiency.gather:" in out


def test_cli_unknown_profile_exits_2(capsys):
    assert main(["hardware", "h1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown hardware 'h1000'" in err
