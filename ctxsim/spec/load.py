"""Load a ModelSpec from a preset name, a ctxsim YAML file, or a Hugging Face config.json."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.model import ModelSpec

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    """Names of the shipped model presets, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def model_from_dict(data: object, source: str = "") -> ModelSpec:
    """Validate a ctxsim spec mapping, raising SpecError with a one-line message."""
    if not isinstance(data, dict):
        raise SpecError(f"{source or 'model spec'}: expected a mapping of spec keys, got {type(data).__name__}")
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source)) from None


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SpecError(f"{path}: malformed YAML{where}: {problem}; fix the syntax") from None


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SpecError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


@lru_cache(maxsize=64)
def _load_preset(name: str) -> ModelSpec:
    path = PRESET_DIR / f"{name}.yaml"
    return model_from_dict(_read_yaml(path), source=f"preset {name}")


def _config_name(path: Path) -> str:
    """Name a model read from a JSON file: its folder for a config.json, else the file name without .json."""
    if path.name == "config.json":
        return path.resolve().parent.name or path.stem
    return path.stem


def load_model(name_or_path: str | Path) -> ModelSpec:
    """Load a model by preset name, from a ctxsim YAML or Hugging Face config.json path, or from a model folder.

    Raises SpecError with a one-line message for an unknown name, a missing file, malformed
    YAML/JSON, or an invalid spec.
    """
    text = str(name_or_path)
    if text in preset_names():
        return _load_preset(text)
    path = Path(text)
    if path.is_dir():
        # A Hugging Face model folder: read the config.json inside it.
        if not (path / "config.json").is_file():
            raise SpecError(f"model folder {path} has no config.json: pass a config.json or a ctxsim YAML file")
        path = path / "config.json"
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise SpecError(f"model file not found: {path}; check the path")
        if path.suffix.lower() == ".json":
            from ctxsim.spec.hf_import import model_from_hf_config

            data = _read_json(path)
            return model_from_hf_config(data, name=_config_name(path), source=str(path))
        return model_from_dict(_read_yaml(path), source=str(path))
    names = ", ".join(preset_names())
    raise SpecError(f"unknown model '{text}': use a preset ({names}) or a path to a .yaml or config.json")
