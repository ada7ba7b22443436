"""Widget groups shared by the pages: model, attention design, and workload.

Every widget has a key and is bound to the URL, so a link restores the view. ``prefix`` keeps the
keys of one page's slots apart (the Compare page has four designs). Tooltips come from the
``Field(description=...)`` of the spec field a widget sets.
"""

from __future__ import annotations

import argparse
from typing import Any

import streamlit as st

import ctxsim
from ctxsim.cli.common import parse_tokens
from ctxsim.spec import DSASelection, MSASelection, ModelSpec, ParallelPlan, SpecError, WindowSelection, Workload
from ctxsim.spec.dtypes import KV_DTYPES
from ctxsim.spec.layers import GQAAttention, MLAAttention
from ctxsim.spec.variants import DSA_DEFAULTS, MSA_DEFAULTS

from dashboards import api
from dashboards.state import CONTEXT_CHOICES, default, field_help

QP = "query-params"

# Parameters of each design, in display order; each is a number input.
DESIGN_PARAMS: dict[str, tuple[str, ...]] = {
    "released": (),
    "dense": (),
    "window": ("window", "sink_tokens", "dense_first", "dense_every"),
    "dsa": ("index_n_heads", "index_head_dim", "index_topk", "dense_first", "dense_every"),
    "indexshare": (
        "index_n_heads",
        "index_head_dim",
        "index_topk",
        "index_topk_freq",
        "index_skip_topk_offset",
        "dense_first",
        "dense_every",
    ),
    "msa": ("block_size", "topk_blocks", "index_head_dim", "local_blocks", "dense_first", "dense_every"),
}
ALL_PARAMS = sorted({p for params in DESIGN_PARAMS.values() for p in params} | {"n_kv_head"})

# Smallest value of each parameter (0 turns dense_first and dense_every off).
_MINIMUM = {"sink_tokens": 0, "dense_first": 0, "dense_every": 0, "local_blocks": 0, "index_topk_freq": 2}

_HELP = {
    "window": field_help(WindowSelection, "window"),
    "sink_tokens": field_help(WindowSelection, "sink_tokens"),
    "index_n_heads": field_help(DSASelection, "index_n_heads"),
    "index_head_dim": field_help(DSASelection, "index_head_dim"),
    "index_topk": field_help(DSASelection, "index_topk"),
    "block_size": field_help(MSASelection, "block_size"),
    "topk_blocks": field_help(MSASelection, "topk_blocks"),
    "local_blocks": field_help(MSASelection, "local_blocks"),
    "index_topk_freq": "IndexShare period F: one DSA layer in F runs its own indexer (GLM-5.2: 4).",
    "index_skip_topk_offset": "Leading DSA layers that all run their own indexer before the period starts (GLM-5.2: 3).",
    "dense_first": "The first layers that keep full attention (MiniMax-M3: 3). 0 changes every layer.",
    "dense_every": "Every n-th layer keeps full attention (Gemma 3: 6, five local to one global). 0 turns it off.",
}


def format_tokens(n: int) -> str:
    """Token count as people write it: 128K and 8M for powers of two (K = 1024), else with commas."""
    if n % 2**20 == 0:
        return f"{n // 2**20}M"
    if n % 2**10 == 0:
        return f"{n // 2**10}K"
    return f"{n:,}"


# ---------------------------------------------------------------------------------------------
# Model


def _model_from_state(prefix: str) -> ModelSpec | None:
    """Return the model a slot's widgets name now (upload first, then preset), or None when invalid."""
    upload = st.session_state.get(f"{prefix}upload")
    try:
        if upload is not None:
            return api.uploaded_model(upload.name, upload.getvalue())
        name = st.session_state.get(f"{prefix}model", default("model"))
        return api.preset(name)
    except SpecError:
        return None


def _reset_design(prefix: str) -> None:
    """Set a slot's design parameters to the values of its new model and design.

    This is the on_change callback of the model, upload and design widgets. It sets the values
    through ``st.session_state``, which the browser takes over together with the URL; removing
    the keys instead would leave the browser's old values in place.
    """
    spec = _model_from_state(prefix)
    label = st.session_state.get(f"{prefix}design", "as released")
    st.session_state[f"{prefix}n_kv_head"] = 0
    if spec is None:
        return
    defaults = _design_defaults(spec, api.DESIGNS.get(label, "released"))
    for params in DESIGN_PARAMS.values():
        for name in params:
            st.session_state[f"{prefix}{name}"] = max(defaults[name], _MINIMUM.get(name, 1))


def model_picker(prefix: str = "", label: str = "Model", preset_default: str | None = None) -> ModelSpec:
    """Show a preset select box and an upload, and return the chosen model.

    An uploaded file replaces the preset while it is there. Raises SpecError for an invalid upload.
    """
    names = ctxsim.preset_names()
    initial = preset_default or default("model")
    _take_plain_link_key("model", prefix)
    linked = st.query_params.get(f"{prefix}model")
    if linked is not None and linked not in names:
        del st.query_params[f"{prefix}model"]
        st.warning(f"model '{linked}' in the link is not a preset: pick one from the list; showing {initial}")
    name = st.selectbox(
        label,
        names,
        index=names.index(initial) if initial in names else 0,
        key=f"{prefix}model",
        bind=QP,
        on_change=_reset_design,
        args=(prefix,),
        help=field_help(ModelSpec, "name"),
    )
    upload = st.file_uploader(
        "or upload a config.json / ctxsim YAML",
        key=f"{prefix}upload",
        on_change=_reset_design,
        args=(prefix,),
        help="A Hugging Face config.json or a ctxsim model YAML; it replaces the preset while uploaded.",
    )
    if upload is not None:
        spec = api.uploaded_model(upload.name, upload.getvalue())
        st.caption(f"Using the uploaded file {upload.name} ({spec.name}); remove it to use the preset.")
        return spec
    return api.preset(name)


# ---------------------------------------------------------------------------------------------
# Attention design


def _design_defaults(spec: ModelSpec, kind: str) -> dict[str, int]:
    """Starting values of a design's parameters: the model's own design where it has one."""
    values: dict[str, Any] = {"window": 4096, "sink_tokens": 0, "dense_first": 0, "dense_every": 0}
    values.update(DSA_DEFAULTS)
    values.update(MSA_DEFAULTS)
    values.update(index_topk_freq=4, index_skip_topk_offset=1)
    pattern = api.released_pattern(spec) or {}
    same_family = pattern.get("kind") == ("dsa" if kind == "indexshare" else kind)
    for key, value in pattern.items():
        if key in ("dense_first", "dense_every") or same_family:
            values[key] = value
    if kind == "indexshare" and values.get("index_topk_freq", 1) < 2:
        values["index_topk_freq"] = 4
    return {k: int(v) for k, v in values.items() if isinstance(v, (int, bool))}


def design_picker(spec: ModelSpec, prefix: str = "", columns: int = 2) -> api.Design:
    """Attention design select box and the number inputs of the chosen design's parameters."""
    label = st.selectbox(
        "Attention design",
        list(api.DESIGNS),
        key=f"{prefix}design",
        bind=QP,
        on_change=_reset_design,
        args=(prefix,),
        help=(
            "Key selection of every layer: keep the model's own, or switch to dense attention, a sliding "
            "window (SWA), DeepSeek Sparse Attention (DSA, an indexer in every layer), IndexShare (DSA "
            "with one indexer per F layers) or MiniMax Sparse Attention (MSA, block top-k)."
        ),
    )
    kind = api.DESIGNS[label]
    defaults = _design_defaults(spec, kind)
    params = []
    names = DESIGN_PARAMS[kind]
    grid = st.columns(columns) if names else []
    for i, name in enumerate(names):
        key = f"{prefix}{name}"
        # The starting value depends on the model, so it is passed only while the widget has no
        # value yet. Afterwards _reset_design sets it, and the URL keeps every value explicitly.
        start = {} if key in st.session_state else {"value": max(defaults[name], _MINIMUM.get(name, 1))}
        value = grid[i % columns].number_input(
            name, min_value=_MINIMUM.get(name, 1), step=1, key=key, bind=QP, help=_HELP[name], **start
        )
        if name in ("dense_first", "dense_every") and value == 0:
            continue
        params.append((name, int(value)))
    return api.Design(kind=kind, params=tuple(params), n_kv_head=_kv_head_picker(spec, prefix))


def _kv_head_picker(spec: ModelSpec, prefix: str) -> int:
    """KV heads of the GQA layers (0 keeps the released count); MLA models have no choice."""
    gqa = [layer.attention for layer in spec.layer_kinds.values() if isinstance(layer.attention, GQAAttention)]
    if not gqa:
        return 0
    n_head = min(a.n_head for a in gqa)
    options = [0] + [d for d in range(1, n_head + 1) if all(a.n_head % d == 0 for a in gqa)]
    released = sorted({a.n_kv_head for a in gqa})
    return st.selectbox(
        "n_kv_head",
        options,
        format_func=lambda d: f"as released ({', '.join(map(str, released))})" if d == 0 else str(d),
        key=f"{prefix}n_kv_head",
        bind=QP,
        help=field_help(GQAAttention, "n_kv_head"),
    )


# ---------------------------------------------------------------------------------------------
# Workload


def kv_dtype_options(specs: list[ModelSpec]) -> list[str]:
    """KV dtypes every model can use: fp8_ds_mla is the MLA record, so only all-MLA models get it."""
    all_mla = all(isinstance(layer.attention, MLAAttention) for spec in specs for layer in spec.layer_kinds.values())
    return ["model default"] + [d for d in KV_DTYPES if d != "fp8_ds_mla" or all_mla]


def _take_plain_link_key(name: str, prefix: str) -> None:
    """Read a link's plain ``model=`` or ``context=`` on a page whose keys carry ``prefix`` (Deploy).

    The plain name is what the other pages write, so a link edited by hand works on every page.
    """
    if prefix and name in st.query_params and f"{prefix}{name}" not in st.query_params:
        st.query_params[f"{prefix}{name}"] = st.query_params[name]
        del st.query_params[name]
        # Rerun so that the bound widget reads the renamed parameter, as on a fresh link.
        st.rerun()


def _check_link_context(key: str) -> None:
    """Rewrite a context in the link written as in the CLI (1m, 131072) as the slider writes it (1M),
    and warn about one the slider does not offer."""
    raw = st.query_params.get(key)
    if raw is None or raw in {format_tokens(n) for n in CONTEXT_CHOICES}:
        return
    try:
        value = parse_tokens(raw)
    except argparse.ArgumentTypeError:
        value = None
    if value in CONTEXT_CHOICES:
        st.query_params[key] = format_tokens(value)
        # Rerun so that the bound slider reads the rewritten parameter, as on a fresh link.
        st.rerun()
    del st.query_params[key]
    st.warning(
        f"context '{raw}' in the link is not offered: use a power of two from 1K to 8M, or 10,000,000; "
        f"showing {format_tokens(default('context'))}"
    )


def context_picker(prefix: str = "", label: str = "Context length N") -> int:
    """Return the context: the slider's, unless an exact token count is typed below it."""
    _take_plain_link_key("context", prefix)
    _check_link_context(f"{prefix}context")
    choice = st.select_slider(
        label,
        options=list(CONTEXT_CHOICES),
        value=default("context"),
        format_func=format_tokens,
        key=f"{prefix}context",
        bind=QP,
        help=field_help(Workload, "context"),
    )
    exact = st.number_input(
        "or an exact context in tokens (0 = the slider)",
        min_value=0,
        value=default("context_exact"),
        step=1024,
        key=f"{prefix}context_exact",
        bind=QP,
        help="A context the slider does not offer, such as 163840 (DeepSeek-V3's max_position_embeddings).",
    )
    return int(exact) or choice


def workload_picker(specs: list[ModelSpec], prefix: str = "") -> dict[str, Any]:
    """Batch, KV dtype and policy, and sparse execution mode, as Workload keyword arguments.

    The KV dtypes offered are those that all of ``specs`` can use.
    """
    left, right = st.columns(2)
    batch = left.number_input(
        "batch",
        min_value=1,
        value=default("batch"),
        step=1,
        key=f"{prefix}batch",
        bind=QP,
        help=field_help(Workload, "batch"),
    )
    kv_dtype = right.selectbox(
        "kv_dtype", kv_dtype_options(specs), key=f"{prefix}kv_dtype", bind=QP, help=field_help(Workload, "kv_dtype")
    )
    kv_policy = left.selectbox(
        "kv_policy", ["need", "paged"], key=f"{prefix}kv_policy", bind=QP, help=field_help(Workload, "kv_policy")
    )
    page_size = right.number_input(
        "page_size",
        min_value=1,
        value=default("page_size"),
        step=1,
        key=f"{prefix}page_size",
        bind=QP,
        help=field_help(Workload, "page_size"),
        disabled=kv_policy != "paged",
    )
    execution = left.selectbox(
        "execution", ["gathered", "masked"], key=f"{prefix}execution", bind=QP, help=field_help(Workload, "execution")
    )
    return {
        "batch": int(batch),
        "kv_dtype": None if kv_dtype == "model default" else kv_dtype,
        "execution": execution,
        "kv_policy": kv_policy,
        "page_size": int(page_size),
    }


# ---------------------------------------------------------------------------------------------
# Hardware and parallel plan


def hardware_picker(key: str = "hardware", upload_key: str = "hw_upload", label: str = "hardware") -> "ctxsim.HardwareProfile":
    """Show a hardware select box and a profile upload; return the uploaded profile if any, else the chosen one.

    Raises SpecError for an invalid upload.
    """
    names = ctxsim.hardware_names()
    initial = default(key)
    name = st.selectbox(
        label,
        names,
        index=names.index(initial) if initial in names else 0,
        key=key,
        bind=QP,
        help="Accelerator profile: peak rates, memory, links and efficiency priors, each with its source.",
    )
    upload = st.file_uploader(
        "or upload a hardware profile YAML (for example a calibrated one)",
        key=upload_key,
        help="A hardware profile YAML; it replaces the shipped profile while uploaded.",
    )
    if upload is not None:
        profile = api.uploaded_hardware(upload.name, upload.getvalue())
        st.caption(f"Using the uploaded profile {profile.name}; remove it to use {name}.")
        return profile
    return api.hardware(name)


def plan_picker() -> tuple[int, dict[str, Any]]:
    """Draw the device count and plan degrees; return them unchecked (``build_plan`` checks them).

    The check runs after the whole sidebar is drawn, so a plan that does not add up yet (tp
    changed, devices not yet) leaves every control on screen.
    """
    devices = st.number_input(
        "devices", min_value=1, value=default("gpus"), step=1, key="gpus", bind=QP,
        help="Devices that serve the model; the plan's tp x pp x dp x cp must equal it.",
    )
    grid = st.columns(3)
    values: dict[str, Any] = {}
    for i, name in enumerate(("tp", "pp", "ep", "dp", "cp", "layer_split")):
        values[name] = int(
            grid[i % 3].number_input(
                name, min_value=1, value=default(name), step=1, key=name, bind=QP, help=field_help(ParallelPlan, name)
            )
        )
    with st.expander("plan options"):
        values["attention_dp"] = st.checkbox(
            "attention_dp", value=default("attention_dp"), key="attention_dp", bind=QP,
            help=field_help(ParallelPlan, "attention_dp"),
        )
        for name, options in (
            ("ep_mode", ["auto", "all_to_all", "all_gather"]),
            ("cp_mode", ["ring", "all_gather"]),
            ("cp_sharding", ["zigzag", "contiguous"]),
        ):
            values[name] = st.selectbox(name, options, key=name, bind=QP, help=field_help(ParallelPlan, name))
    return int(devices), values


def build_plan(devices: int, values: dict[str, Any]) -> ParallelPlan:
    """Return the ParallelPlan of ``values``; raise SpecError when it is invalid or of another size."""
    plan = api.make_plan(values)
    if plan.world_size != devices:
        raise SpecError(
            f"plan tp {plan.tp} x pp {plan.pp} x dp {plan.dp} x cp {plan.cp} = {plan.world_size} devices, "
            f"but devices is {devices}: change the degrees or the device count"
        )
    return plan
