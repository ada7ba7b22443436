"""``ctxsim validate``: held-out cases, predicted layer times, MAPE, device checks and the plot."""

import json

import pytest
import yaml

import ctxsim
from ctxsim.calibrate.shapes import (
    CASE_SETS,
    GRIDS,
    LayerShape,
    calibration_grid,
    validation_cases,
)
from ctxsim.calibrate.validate import Case, check_device, mape, predict_layer_s, summary
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import hardware_from_dict


def _launch_only_profile(launch_s: float = 1.0):
    """The cpu profile with a launch overhead so large that every op costs one launch, nothing else."""
    data = ctxsim.load_hardware("cpu").model_dump(mode="json")
    data["launch_overhead_s"] = launch_s
    return hardware_from_dict(data)


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("cases", CASE_SETS)
def test_cases_held_out(grid, cases):
    seen = {(s.phase, s.d_model) for s in calibration_grid(grid)} | {(s.phase, s.context) for s in calibration_grid(grid)}
    for case in validation_cases(cases):
        assert (case.phase, case.d_model) not in seen
        assert (case.phase, case.context) not in seen


def test_quick_cases_cover_phases_and_designs():
    cases = validation_cases("quick")
    assert {c.phase for c in cases} == {"prefill", "decode"}
    assert {c.sparse for c in cases} == {False, True}


def test_quick_cases_several_contexts():
    contexts = {c.context for c in validation_cases("quick") if c.phase == "decode"}
    assert len(contexts) == 3


def test_shape_rejects_width():
    with pytest.raises(SpecError, match="multiple of 128"):
        LayerShape("gqa", 200, "prefill", 128)


def test_shape_rejects_design():
    with pytest.raises(SpecError, match="unknown design"):
        LayerShape("linear", 256, "prefill", 128)


def test_shape_heads():
    spec = LayerShape("gqa", 640, "decode", 2048).spec()
    attention = spec.layer_kinds["gqa"].attention
    # 640 / 64 = 10 query heads of 64, two KV heads; the MLP is 3 x 640 wide.
    assert (attention.n_head, attention.n_kv_head, attention.head_dim) == (10, 2, 64)
    assert spec.layer_kinds["gqa"].ffn.intermediate_size == 3 * 640


def test_shape_chunks():
    shape = LayerShape("gqa", 256, "prefill", 1000, chunk=400)
    assert shape.chunks() == [(1, 400), (401, 800), (801, 1000)]


# ---------------------------------------------------------------------------------------------
# Predictions and errors


def test_predict_counts_layer_ops():
    # A dense GQA layer runs 12 ops: attn.norm, q_proj, kv_proj, rope, core, o_proj, residual,
    # ffn.norm, up, act, down and residual. At 1 s per launch its prefill takes 12 s plus the work.
    predicted = predict_layer_s(LayerShape("gqa", 256, "prefill", 64), _launch_only_profile())
    assert predicted == pytest.approx(12.0, rel=1e-3)


def test_predict_launches_per_chunk():
    # Three forward passes launch every op three times: 3 x 12 launches.
    predicted = predict_layer_s(LayerShape("gqa", 256, "prefill", 96, chunk=32), _launch_only_profile())
    assert predicted == pytest.approx(36.0, rel=1e-3)


def test_predict_dsa_decode_ops():
    # A DSA layer adds the indexer's q, k and weight projections, its score and its top-k: 17 ops.
    predicted = predict_layer_s(LayerShape("dsa", 256, "decode", 512), _launch_only_profile())
    assert predicted == pytest.approx(17.0, rel=1e-3)


def _case(measured: float, predicted: float, phase: str = "prefill", design: str = "gqa") -> Case:
    context = 384 if phase == "prefill" else 2048
    return Case(LayerShape(design, 384, phase, context), measured, predicted)


def test_case_error_sign():
    assert _case(2.0, 2.5).error == pytest.approx(0.25)


def test_mape_fraction():
    # |+0.25| and |-0.1| average to 0.175.
    assert mape([_case(2.0, 2.5), _case(1.0, 0.9)]) == pytest.approx(0.175)


def test_mape_empty():
    assert mape([]) is None


def test_summary_groups():
    cases = [_case(2.0, 2.5), _case(1.0, 0.9, "decode", "dsa")]
    result = summary(cases)
    assert (result["prefill"], result["decode"]) == (pytest.approx(0.25), pytest.approx(0.1))
    assert (result["dense"], result["sparse"]) == (pytest.approx(0.25), pytest.approx(0.1))


# ---------------------------------------------------------------------------------------------
# Device checks


def _calibrated(device: str):
    data = ctxsim.load_hardware("cpu").model_dump(mode="json")
    data["provenance"] = {"kind": "calibration", "date": "2026-12-04", "device": device, "software": {"torch": "x"}}
    return hardware_from_dict(data)


def test_check_device_rejects_type():
    with pytest.raises(SpecError, match="is for a gpu device"):
        check_device(ctxsim.load_hardware("h200"), "cpu", "Some CPU (2 cores)")


def test_check_device_rejects_other_device():
    with pytest.raises(SpecError, match="calibrated on 'Other CPU"):
        check_device(_calibrated("Other CPU (8 cores)"), "cpu", "Some CPU (2 cores)")


def test_check_device_accepts_same():
    check_device(_calibrated("Some CPU (2 cores)"), "cpu", "Some CPU (2 cores)")


def test_check_device_accepts_datasheet_of_type():
    check_device(ctxsim.load_hardware("cpu"), "cpu", "Some CPU (2 cores)")


# ---------------------------------------------------------------------------------------------
# The command


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    pytest.importorskip("torch")
    from ctxsim.cli.main import main

    path = tmp_path_factory.mktemp("validate") / "tiny.yaml"
    assert main(["calibrate", "--grid", "tiny", "--out", str(path)]) == 0
    return path


def test_validate_accepts_calibration(tiny_profile, capsys):
    from ctxsim.cli.main import main

    assert main(["validate", "--profile", str(tiny_profile), "--cases", "tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["cases"]) == len(validation_cases("tiny"))


def test_validate_json_mape(tiny_profile, capsys):
    from ctxsim.cli.main import main

    main(["validate", "--profile", str(tiny_profile), "--cases", "tiny", "--json"])
    report = json.loads(capsys.readouterr().out)
    errors = [abs(c["predicted_s"] - c["measured_s"]) / c["measured_s"] for c in report["cases"]]
    assert report["mape"] == pytest.approx(sum(errors) / len(errors))


def test_validate_table(tiny_profile, capsys):
    from ctxsim.cli.main import main

    assert main(["validate", "--profile", str(tiny_profile), "--cases", "tiny"]) == 0
    assert "MAPE" in capsys.readouterr().out


def test_validate_plot(tiny_profile, tmp_path):
    pytest.importorskip("matplotlib")
    from ctxsim.cli.main import main

    png = tmp_path / "fit.png"
    assert main(["validate", "--profile", str(tiny_profile), "--cases", "tiny", "--plot", str(png), "--json"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_refuses_gpu_profile(capsys):
    pytest.importorskip("torch")
    from ctxsim.cli.main import main

    assert main(["validate", "--profile", "h200", "--device", "cpu", "--cases", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "is for a gpu device" in err
    assert len(err.strip().splitlines()) == 1


def test_validate_refuses_other_device(tiny_profile, tmp_path, capsys):
    from ctxsim.cli.main import main

    data = yaml.safe_load(tiny_profile.read_text())
    data["provenance"]["device"] = "Another CPU (64 cores)"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(data))
    assert main(["validate", "--profile", str(other), "--cases", "tiny"]) == 2
    assert "calibrated on 'Another CPU (64 cores)'" in capsys.readouterr().err
