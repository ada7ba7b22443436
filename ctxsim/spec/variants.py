"""Derive design variants of a ModelSpec: another key selection, or another number of KV heads.

``with_selection`` gives every layer of a model one attention design (dense, sliding window, DSA,
IndexShare, MSA), keeping the projections and FFNs, so two designs of the same model can be
compared. ``with_kv_heads`` changes the KV heads of every GQA layer (MHA, GQA, MQA).
``selection_pattern`` reads a model's own design back as ``with_selection`` arguments.

The result is validated like any spec; an impossible variant (MSA on an MLA model, a window of 0)
raises SpecError.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from ctxsim.spec.errors import SpecError, format_validation_error
from ctxsim.spec.layers import (
    DenseSelection,
    DSASelection,
    GQAAttention,
    LayerSpec,
    MoEFFN,
    MSASelection,
    WindowSelection,
)
from ctxsim.spec.load import model_from_dict
from ctxsim.spec.model import ModelSpec

SELECTION_KINDS = ("dense", "window", "dsa", "msa")

# Defaults for a model that has no layer of the requested kind yet.
# DSA: DeepSeek-V3.2-Exp inference/model.py ModelArgs (index_n_heads 64, index_head_dim 128, index_topk 2048).
DSA_DEFAULTS = {"index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}
# MSA: MiniMax-M3 sparse_attention_config (block 128, 16 blocks, index dim 128, 1 init and 1 local block).
MSA_DEFAULTS = {"block_size": 128, "topk_blocks": 16, "index_head_dim": 128, "init_blocks": 1, "local_blocks": 1}

# Keyword arguments that apply to each selection kind, besides the layer pattern arguments.
_KIND_PARAMS = {
    "dense": (),
    "window": ("window", "sink_tokens", "learned_sinks"),
    "dsa": ("index_n_heads", "index_head_dim", "index_topk", "index_topk_freq", "index_skip_topk_offset"),
    "msa": ("block_size", "topk_blocks", "index_n_heads", "index_head_dim", "init_blocks", "local_blocks"),
}


def with_selection(
    spec: ModelSpec,
    kind: str,
    *,
    window: int | None = None,
    sink_tokens: int | None = None,
    learned_sinks: bool | None = None,
    index_n_heads: int | None = None,
    index_head_dim: int | None = None,
    index_topk: int | None = None,
    index_topk_freq: int | None = None,
    index_skip_topk_offset: int | None = None,
    block_size: int | None = None,
    topk_blocks: int | None = None,
    init_blocks: int | None = None,
    local_blocks: int | None = None,
    dense_first: int = 0,
    dense_every: int | None = None,
    name: str | None = None,
) -> ModelSpec:
    """Return ``spec`` with every layer's key selection replaced by one of ``kind``.

    ``kind`` is 'dense', 'window', 'dsa' or 'msa'. Arguments left as None take the value of a layer
    of that kind already in ``spec``, else ``DSA_DEFAULTS`` / ``MSA_DEFAULTS``; 'window' needs
    ``window`` unless ``spec`` has a window layer. MSA uses one index head per KV group, so its
    ``index_n_heads`` defaults to each layer's ``n_kv_head``.

    Layer pattern: the first ``dense_first`` layers, and every layer i (0-based) with
    ``(i + 1) % dense_every == 0`` (Gemma 3's 5 local : 1 global is ``dense_every=6``), keep full
    attention. IndexShare (GLM-5.2): with ``index_topk_freq`` F > 1, the j-th DSA layer (0-based,
    counting DSA layers only) owns its indexer when ``max(j - offset + 1, 0) % F == 0`` with
    ``offset = index_skip_topk_offset`` (default 1), and the others reuse the last owner's top-k.
    This is the transformers GlmMoeDsaConfig rule; GLM-5.2 uses F = 4, offset = 3 on all 78 layers.

    Raises SpecError for an unknown kind, an argument that does not apply to ``kind``, a missing
    window, or a variant that fails validation (such as MSA on MLA layers).
    """
    overrides = {
        "window": window,
        "sink_tokens": sink_tokens,
        "learned_sinks": learned_sinks,
        "index_n_heads": index_n_heads,
        "index_head_dim": index_head_dim,
        "index_topk": index_topk,
        "index_topk_freq": index_topk_freq,
        "index_skip_topk_offset": index_skip_topk_offset,
        "block_size": block_size,
        "topk_blocks": topk_blocks,
        "init_blocks": init_blocks,
        "local_blocks": local_blocks,
    }
    _check_arguments(kind, overrides, dense_first, dense_every, spec.n_layer)
    params = _fill_defaults(spec, kind, {k: v for k, v in overrides.items() if v is not None})
    if kind == "msa" and any(not isinstance(layer.attention, GQAAttention) for layer in spec.layer_kinds.values()):
        raise SpecError(
            f"selection 'msa' needs GQA attention, but {spec.name} has MLA layers, and MSA picks blocks per KV group. "
            "Choose dense, window or dsa"
        )

    # Role of each layer: 'dense' (kept full), 'owner' (the new selection) or 'shared' (IndexShare).
    roles = _layer_roles(spec.n_layer, kind, dense_first, dense_every, params)
    layers = [
        _make_layer(spec.layer_kinds[k], kind, role, params, spec.name) for k, role in zip(spec.layer_sequence, roles)
    ]

    # MTP layers follow the main stack. Under IndexShare they reuse its top-k, as GLM-5.2's MTP
    # layer does (index_share_for_mtp_iteration); otherwise they take the new selection.
    mtp_layer = None
    if spec.n_mtp_layers:
        mtp_role = "shared" if kind == "dsa" and params["index_topk_freq"] > 1 else "owner"
        mtp_layer = _make_layer(spec.layer_kinds[spec.mtp_layer_kind], kind, mtp_role, params, spec.name)

    label = name or f"{spec.name}+{_variant_label(kind, params, dense_first, dense_every)}"
    return _rebuild(spec, layers, mtp_layer, label, source=f"{spec.name} with selection '{kind}'")


def with_kv_heads(spec: ModelSpec, n_kv_head: int, *, name: str | None = None) -> ModelSpec:
    """Return ``spec`` with ``n_kv_head`` KV heads in every GQA layer (1 is MQA, n_head is MHA).

    MSA layers keep one index head per KV group, so their ``index_n_heads`` follows. Raises
    SpecError when the model has no GQA layer (MLA caches one latent) or ``n_kv_head`` does not
    divide a layer's ``n_head``.
    """
    if not isinstance(n_kv_head, int) or isinstance(n_kv_head, bool) or n_kv_head <= 0:
        raise SpecError(f"invalid n_kv_head {n_kv_head!r}: use a positive integer that divides n_head")
    if not any(isinstance(layer.attention, GQAAttention) for layer in spec.layer_kinds.values()):
        raise SpecError(f"{spec.name} has no GQA layers: n_kv_head applies to GQA attention, and MLA caches one latent")

    layers = []
    for kind in spec.layer_sequence:
        layer = spec.layer_kinds[kind]
        if isinstance(layer.attention, GQAAttention):
            attention = layer.attention.model_dump()
            attention["n_kv_head"] = n_kv_head
            selection = layer.selection.model_dump()
            if isinstance(layer.selection, MSASelection):
                selection["index_n_heads"] = n_kv_head
            layer = _validate_layer({**layer.model_dump(), "attention": attention, "selection": selection}, spec.name)
        layers.append(layer)
    mtp_layer = spec.layer_kinds[spec.mtp_layer_kind] if spec.n_mtp_layers else None
    return _rebuild(spec, layers, mtp_layer, name or f"{spec.name}+kv{n_kv_head}", source=f"{spec.name} with n_kv_head {n_kv_head}")


def selection_pattern(spec: ModelSpec) -> dict[str, Any] | None:
    """Return the ``with_selection`` arguments that rebuild the key selection of ``spec``.

    The result has ``kind`` plus keyword arguments, for example ``{"kind": "msa", "block_size":
    128, ..., "dense_first": 3}`` for MiniMax-M3. Returns None when the layers mix designs in a way
    ``with_selection`` cannot express (two window sizes, dense layers in an irregular pattern).
    """
    layers = [spec.layer_kinds[kind] for kind in spec.layer_sequence]
    sparse = [layer for layer in layers if not isinstance(layer.selection, DenseSelection)]
    if not sparse:
        return {"kind": "dense"}

    # Every non-dense layer must have the same design. DSA layers may differ in owning the
    # indexer, and MSA layers in index_n_heads when it follows each layer's n_kv_head.
    def shape(layer: LayerSpec) -> dict[str, Any]:
        data = layer.selection.model_dump()
        data.pop("indexer", None)
        if isinstance(layer.selection, MSASelection) and data["index_n_heads"] == layer.attention.n_kv_head:
            data["index_n_heads"] = None
        return data

    out = shape(sparse[0])
    if any(shape(layer) != out for layer in sparse):
        return None
    if out.get("index_n_heads", 0) is None:
        del out["index_n_heads"]
    if out["kind"] == "dsa":
        share = _index_share(["owner" if layer.owns_indexer else "shared" for layer in sparse])
        if share is None:
            return None
        out.update(share)

    dense = _dense_pattern([isinstance(layer.selection, DenseSelection) for layer in layers])
    if dense is None:
        return None
    out.update(dense)
    return out


def _index_share(roles: list[str]) -> dict[str, int] | None:
    """``index_topk_freq`` and ``index_skip_topk_offset`` that give these DSA roles, or None."""
    if "shared" not in roles:
        return {"index_topk_freq": 1, "index_skip_topk_offset": 1}
    offset = roles.index("shared")
    if offset == 0:
        return None
    owners_after = [j for j in range(offset, len(roles)) if roles[j] == "owner"]
    freq = (owners_after[0] - offset + 1) if owners_after else len(roles) - offset + 1
    if freq < 2:
        return None
    expected = ["owner" if max(j - offset + 1, 0) % freq == 0 else "shared" for j in range(len(roles))]
    return {"index_topk_freq": freq, "index_skip_topk_offset": offset} if expected == roles else None


def _dense_pattern(is_dense: list[bool]) -> dict[str, int] | None:
    """``dense_first`` / ``dense_every`` arguments that keep exactly these layers dense, or None."""
    lead = 0
    while lead < len(is_dense) and is_dense[lead]:
        lead += 1
    if not any(is_dense[lead:]):
        return {"dense_first": lead} if lead else {}
    every = is_dense.index(True) + 1
    if every >= 2 and is_dense == [(i + 1) % every == 0 for i in range(len(is_dense))]:
        return {"dense_every": every}
    return None


# ---------------------------------------------------------------------------------------------
# Arguments


def _check_arguments(kind: str, overrides: dict[str, Any], dense_first: int, dense_every: int | None, n_layer: int) -> None:
    if kind not in SELECTION_KINDS:
        raise SpecError(f"unknown selection kind '{kind}': use one of {', '.join(SELECTION_KINDS)}")
    for key, value in overrides.items():
        if value is not None and key not in _KIND_PARAMS[kind]:
            raise SpecError(f"'{key}' does not apply to selection '{kind}': leave it unset")
    for key, value in overrides.items():
        if key == "learned_sinks":
            if value is not None and not isinstance(value, bool):
                raise SpecError(f"invalid learned_sinks {value!r}: use true or false")
            continue
        minimum = 0 if key in ("sink_tokens", "init_blocks", "local_blocks") else 1
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < minimum):
            raise SpecError(f"invalid {key} {value!r}: use an integer of at least {minimum}")
    if kind == "dense" and (dense_first or dense_every):
        raise SpecError("dense_first and dense_every do not apply to selection 'dense': every layer is dense")
    if not isinstance(dense_first, int) or not 0 <= dense_first < n_layer:
        raise SpecError(f"invalid dense_first {dense_first!r}: use 0 to {n_layer - 1} so that some layer changes")
    if dense_every is not None and (not isinstance(dense_every, int) or dense_every < 2):
        raise SpecError(f"invalid dense_every {dense_every!r}: use 2 or more (6 keeps every sixth layer dense)")


def _first_selection(spec: ModelSpec, cls: type) -> Any:
    """The selection of the first layer (in stack order) whose selection is a ``cls``, or None."""
    for kind in spec.layer_sequence:
        selection = spec.layer_kinds[kind].selection
        if isinstance(selection, cls):
            return selection
    return None


def _fill_defaults(spec: ModelSpec, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Complete ``params`` from a layer of the same kind in ``spec``, else from the module defaults."""
    out = dict(params)
    if kind == "window":
        existing = _first_selection(spec, WindowSelection)
        if "window" not in out:
            if existing is None:
                raise SpecError(f"selection 'window' needs a window: {spec.name} has no window layer to copy it from")
            out["window"] = existing.window
        out.setdefault("sink_tokens", existing.sink_tokens if existing else 0)
        out.setdefault("learned_sinks", existing.learned_sinks if existing else False)
    elif kind == "dsa":
        existing = _first_selection(spec, DSASelection)
        for key, value in DSA_DEFAULTS.items():
            out.setdefault(key, getattr(existing, key) if existing else value)
        out.setdefault("index_topk_freq", 1)
        out.setdefault("index_skip_topk_offset", 1)
    elif kind == "msa":
        existing = _first_selection(spec, MSASelection)
        for key, value in MSA_DEFAULTS.items():
            out.setdefault(key, getattr(existing, key) if existing else value)
    return out


# ---------------------------------------------------------------------------------------------
# Layers


def _layer_roles(n_layer: int, kind: str, dense_first: int, dense_every: int | None, params: dict) -> list[str]:
    roles = []
    sparse_index = 0
    for i in range(n_layer):
        if kind == "dense" or i < dense_first or (dense_every and (i + 1) % dense_every == 0):
            roles.append("dense")
            continue
        role = "owner"
        if kind == "dsa":
            shifted = max(sparse_index - params["index_skip_topk_offset"] + 1, 0)
            role = "owner" if shifted % params["index_topk_freq"] == 0 else "shared"
        roles.append(role)
        sparse_index += 1
    # An offset of 1 or more makes DSA layer 0 an owner, so every shared layer follows an owner.
    return roles


def _selection_data(kind: str, role: str, params: dict, layer: LayerSpec) -> dict[str, Any]:
    if kind == "dense" or role == "dense":
        return {"kind": "dense"}
    if kind == "window":
        keys = ("window", "sink_tokens", "learned_sinks")
        return {"kind": "window", **{k: params[k] for k in keys}}
    if kind == "dsa":
        keys = ("index_n_heads", "index_head_dim", "index_topk")
        return {"kind": "dsa", **{k: params[k] for k in keys}, "indexer": role}
    # MSA: one index-query head per KV group unless the caller chose otherwise.
    heads = params.get("index_n_heads", layer.attention.n_kv_head)
    keys = ("block_size", "topk_blocks", "index_head_dim", "init_blocks", "local_blocks")
    return {"kind": "msa", "index_n_heads": heads, **{k: params[k] for k in keys}}


def _validate_layer(data: dict[str, Any], model_name: str) -> LayerSpec:
    try:
        return LayerSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source=f"{model_name} variant")) from None


def _make_layer(layer: LayerSpec, kind: str, role: str, params: dict, model_name: str) -> LayerSpec:
    data = layer.model_dump()
    data["selection"] = _selection_data(kind, role, params, layer)
    return _validate_layer(data, model_name)


# ---------------------------------------------------------------------------------------------
# Reassembly


def _kind_name(layer: LayerSpec) -> str:
    ffn = "moe" if isinstance(layer.ffn, MoEFFN) else "mlp"
    selection = layer.selection
    if isinstance(selection, DSASelection) and not selection.owns_indexer:
        return f"{ffn}_dsa_shared"
    return f"{ffn}_{selection.kind}"


def _rebuild(spec: ModelSpec, layers: list[LayerSpec], mtp_layer: LayerSpec | None, name: str, source: str) -> ModelSpec:
    """Build a ModelSpec from one LayerSpec per layer, merging equal layers into named kinds and runs."""
    kinds: dict[str, LayerSpec] = {}
    names_by_layer: dict[str, str] = {}

    def kind_of(layer: LayerSpec) -> str:
        key = json.dumps(layer.model_dump(mode="json"), sort_keys=True)
        if key not in names_by_layer:
            base = _kind_name(layer)
            candidate, suffix = base, 2
            while candidate in kinds:
                candidate, suffix = f"{base}_{suffix}", suffix + 1
            names_by_layer[key] = candidate
            kinds[candidate] = layer
        return names_by_layer[key]

    runs: list[dict[str, Any]] = []
    for layer in layers:
        kind = kind_of(layer)
        if runs and runs[-1]["kind"] == kind:
            runs[-1]["count"] += 1
        else:
            runs.append({"kind": kind, "count": 1})
    mtp_kind = kind_of(mtp_layer) if mtp_layer is not None else None

    data = spec.model_dump(mode="json")
    data.update(
        name=name,
        layer_kinds={k: v.model_dump(mode="json") for k, v in kinds.items()},
        layers=runs,
        mtp_kind=mtp_kind,
        source=f"{source}; {spec.source}" if spec.source else source,
    )
    return model_from_dict(data, source=source)


def _variant_label(kind: str, params: dict, dense_first: int, dense_every: int | None) -> str:
    if kind == "dense":
        label = "dense"
    elif kind == "window":
        label = f"window{params['window']}"
    elif kind == "dsa":
        label = f"dsa-top{params['index_topk']}"
        if params["index_topk_freq"] > 1:
            label += f"-share{params['index_topk_freq']}"
    else:
        label = f"msa-{params['topk_blocks']}x{params['block_size']}"
    if dense_first:
        label += f"-dense{dense_first}"
    if dense_every:
        label += f"-every{dense_every}"
    return label
