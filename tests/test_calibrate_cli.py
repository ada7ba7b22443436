"""``ctxsim calibrate``: a tiny CPU calibration end to end, the output file rules, and Ctrl-C.

The tiny grid times six small layer runs and four probes, a few seconds on a 2-core CPU. Its fit
is a smoke test, not a usable profile.
"""

import os

import pytest
import yaml

pytest.importorskip("torch")

from ctxsim.calibrate.fit import Sample  # noqa: E402
from ctxsim.calibrate.profile import write_atomic  # noqa: E402
from ctxsim.cli.main import main  # noqa: E402
from ctxsim.spec.errors import SpecError  # noqa: E402
from ctxsim.spec.hardware import COMPUTE_KINDS, load_hardware  # noqa: E402
from refmodel import timing  # noqa: E402


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibrate") / "tiny-cpu.yaml"
    assert main(["calibrate", "--device", "cpu", "--grid", "tiny", "--out", str(path)]) == 0
    return path


def _canned(timer, shapes, copies, gathers, progress=None):
    """Measurements without timing anything: GEMMs at 1e11 FLOP/s and copies at 1e10 B/s."""
    samples = [Sample("gemm", "ffn.up", 10.0**e, 0, 10.0 ** (e - 2), 1, 10.0**e / 1e11 + 1e-6) for e in range(5, 10)]
    samples += [Sample("memory", "memory.copy", 0, 0, 10.0**e, 1, 10.0**e / 1e10 + 1e-6) for e in range(4, 9)]
    return timing.Measurements(samples, 1e-6, ["canned"])


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------------------------------------
# A real tiny calibration


def test_calibrate_tiny_valid_profile(tiny_profile):
    profile = load_hardware(tiny_profile)
    assert profile.provenance.kind == "calibration"


def test_calibrate_tiny_names_device(tiny_profile):
    profile = load_hardware(tiny_profile)
    assert profile.provenance.device == timing.device_name(timing.resolve_device("cpu"))


def test_calibrate_tiny_records_run(tiny_profile):
    run = load_hardware(tiny_profile).provenance.calibration
    assert (run.grid, run.threads, run.clock, run.torch_dtype) == ("tiny", 1, "thread CPU time", "bfloat16")


def test_calibrate_tiny_records_versions(tiny_profile):
    software = load_hardware(tiny_profile).provenance.software
    assert software["torch"] == timing.torch.__version__


def test_calibrate_tiny_fits_every_kind(tiny_profile):
    # The tiny grid times GEMMs, attention, top-k and elementwise ops, plus copy and gather probes.
    assert sorted(load_hardware(tiny_profile).efficiency_curves) == sorted(COMPUTE_KINDS)


def test_calibrate_tiny_residuals(tiny_profile):
    residuals = load_hardware(tiny_profile).provenance.calibration.residuals
    assert set(residuals) == set(COMPUTE_KINDS)


def test_calibrate_tiny_name_from_file(tiny_profile):
    assert load_hardware(tiny_profile).name == "tiny-cpu"


def test_calibrate_tiny_no_temporary_files(tiny_profile):
    assert _leftovers(tiny_profile.parent) == []


# ---------------------------------------------------------------------------------------------
# Output file rules


def test_calibrate_keeps_existing_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(timing, "measure", _canned)
    out = tmp_path / "mine.yaml"
    out.write_text("keep: me\n")
    assert main(["calibrate", "--grid", "tiny", "--out", str(out)]) == 2
    assert out.read_text() == "keep: me\n"
    assert "--force" in capsys.readouterr().err


def test_calibrate_force_overwrites(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "measure", _canned)
    out = tmp_path / "mine.yaml"
    out.write_text("keep: me\n")
    assert main(["calibrate", "--grid", "tiny", "--out", str(out), "--force"]) == 0
    assert yaml.safe_load(out.read_text())["provenance"]["kind"] == "calibration"


def test_calibrate_rejects_suffix(tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path / "mine.txt")]) == 2
    assert ".yaml" in capsys.readouterr().err


def test_calibrate_rejects_missing_folder(tmp_path, capsys):
    assert main(["calibrate", "--out", str(tmp_path / "missing" / "mine.yaml")]) == 2
    assert "folder not found" in capsys.readouterr().err


def test_calibrate_rejects_unknown_device(tmp_path, capsys):
    assert main(["calibrate", "--device", "tpu", "--out", str(tmp_path / "mine.yaml")]) == 2
    assert "tpu" in capsys.readouterr().err


@pytest.mark.skipif(timing.torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_calibrate_rejects_missing_cuda(tmp_path, capsys):
    assert main(["calibrate", "--device", "cuda", "--out", str(tmp_path / "mine.yaml")]) == 2
    assert "not available" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_calibrate_interrupt_measuring(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(timing, "measure", _interrupt)
    out = tmp_path / "mine.yaml"
    assert main(["calibrate", "--grid", "tiny", "--out", str(out)]) == 130
    assert not out.exists()
    assert "not written" in capsys.readouterr().err


def test_calibrate_interrupt_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "measure", _canned)
    monkeypatch.setattr(os, "link", _interrupt)
    out = tmp_path / "mine.yaml"
    assert main(["calibrate", "--grid", "tiny", "--out", str(out)]) == 130
    assert not out.exists()


def test_calibrate_interrupt_writing_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "measure", _canned)
    monkeypatch.setattr(os, "link", _interrupt)
    main(["calibrate", "--grid", "tiny", "--out", str(tmp_path / "mine.yaml")])
    assert _leftovers(tmp_path) == []


def test_calibrate_interrupt_keeps_forced_file(tmp_path, monkeypatch):
    monkeypatch.setattr(timing, "measure", _canned)
    monkeypatch.setattr(os, "replace", _interrupt)
    out = tmp_path / "mine.yaml"
    out.write_text("keep: me\n")
    assert main(["calibrate", "--grid", "tiny", "--out", str(out), "--force"]) == 130
    assert out.read_text() == "keep: me\n"


# ---------------------------------------------------------------------------------------------
# write_atomic


def test_write_atomic_new_file(tmp_path):
    out = tmp_path / "a.yaml"
    write_atomic(out, b"x: 1\n", force=False)
    assert out.read_bytes() == b"x: 1\n"


def test_write_atomic_no_clobber(tmp_path):
    out = tmp_path / "a.yaml"
    out.write_bytes(b"old\n")
    with pytest.raises(SpecError, match="already exists"):
        write_atomic(out, b"new\n", force=False)
    assert out.read_bytes() == b"old\n"


def test_write_atomic_no_clobber_no_temporary(tmp_path):
    out = tmp_path / "a.yaml"
    out.write_bytes(b"old\n")
    with pytest.raises(SpecError):
        write_atomic(out, b"new\n", force=False)
    assert _leftovers(tmp_path) == []


def test_write_atomic_force(tmp_path):
    out = tmp_path / "a.yaml"
    out.write_bytes(b"old\n")
    write_atomic(out, b"new\n", force=True)
    assert out.read_bytes() == b"new\n"
