"""ModelSpec: a model's architecture as runs of identical layers."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ctxsim.spec.dtypes import KVDtype, WeightDtype, weight_bytes
from ctxsim.spec.layers import DSASelection, LayerSpec, PositiveInt

LayerName = Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


class LayerRun(BaseModel):
    """``count`` consecutive layers of the named layer kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LayerName = Field(description="Name of a layer kind defined in layer_kinds.")
    count: PositiveInt = Field(description="Consecutive layers of this kind.")


class ModelSpec(BaseModel):
    """A model's architecture: widths, the layer stack as runs of layer kinds, and default dtypes.

    Layer kinds are named LayerSpecs (for example ``dense_mlp`` for the first dense-FFN layers and
    ``moe`` for the rest); ``layers`` lists them in order as runs. Multi-token-prediction (MTP)
    layers sit after the main stack and are counted apart from the published parameter totals.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    name: str = Field(min_length=1, description="Preset name, lowercase release name.")
    d_model: PositiveInt = Field(description="Hidden width (HF hidden_size).")
    vocab_size: PositiveInt = Field(description="Vocabulary size.")
    tie_word_embeddings: bool = Field(False, description="Whether the LM head shares the embedding matrix.")
    layer_kinds: dict[LayerName, LayerSpec] = Field(description="Named layer kinds used by 'layers'.")
    layers: list[LayerRun] = Field(min_length=1, description="The layer stack, in order, as runs of layer kinds.")
    n_mtp_layers: Annotated[int, Field(ge=0, strict=True)] = Field(
        0, description="Multi-token-prediction layers (HF num_nextn_predict_layers)."
    )
    mtp_kind: LayerName | None = Field(
        None, description="Layer kind of the MTP layers; defaults to the kind of the last layer."
    )
    max_context: PositiveInt | None = Field(None, description="Longest supported context (HF max_position_embeddings).")
    weight_dtype: WeightDtype = Field("bf16", description="Dtype of the released weights.")
    expert_weight_dtype: WeightDtype | None = Field(
        None, description="Dtype of routed-expert weights when it differs (gpt-oss: mxfp4)."
    )
    vocab_weight_dtype: WeightDtype | None = Field(
        None, description="Dtype of the embedding and LM head when it differs (fp8 releases keep them in bf16)."
    )
    kv_dtype: KVDtype = Field("bf16", description="Default KV-cache dtype.")
    source: str = Field("", description="Where the numbers come from (config.json, paper).")

    # --- validators, one rule each -------------------------------------------------------

    @model_validator(mode="after")
    def _runs_name_known_kinds(self) -> "ModelSpec":
        for i, run in enumerate(self.layers):
            if run.kind not in self.layer_kinds:
                known = ", ".join(sorted(self.layer_kinds))
                raise ValueError(f"layers[{i}].kind '{run.kind}' is not in layer_kinds: use one of {known}")
        return self

    @model_validator(mode="after")
    def _mtp_kind_known(self) -> "ModelSpec":
        if self.mtp_kind is not None and self.mtp_kind not in self.layer_kinds:
            known = ", ".join(sorted(self.layer_kinds))
            raise ValueError(f"mtp_kind '{self.mtp_kind}' is not in layer_kinds: use one of {known}")
        return self

    @model_validator(mode="after")
    def _shared_indexer_follows_owner(self) -> "ModelSpec":
        owner_seen = False
        for index, kind in enumerate(self.layer_sequence):
            sel = self.layer_kinds[kind].selection
            if isinstance(sel, DSASelection):
                if sel.owns_indexer:
                    owner_seen = True
                elif not owner_seen:
                    raise ValueError(
                        f"layer {index} ('{kind}') shares an indexer but no earlier layer owns one: "
                        "make the first DSA layer an indexer owner"
                    )
        return self

    # --- derived numbers -------------------------------------------------------------------

    @cached_property
    def layer_sequence(self) -> tuple[str, ...]:
        """Layer kind name of every layer, in order."""
        out: list[str] = []
        for run in self.layers:
            out.extend([run.kind] * run.count)
        return tuple(out)

    @property
    def n_layer(self) -> int:
        return sum(run.count for run in self.layers)

    @cached_property
    def layer_stack(self) -> tuple[LayerSpec, ...]:
        """The LayerSpec of every main-stack layer, in order.

        Two specs with equal stacks describe the same layers even when their layer kinds are
        named differently (a preset and a config.json import, for example).
        """
        return tuple(self.layer_kinds[kind] for kind in self.layer_sequence)

    @cached_property
    def kind_counts(self) -> dict[str, int]:
        """Number of layers of each kind in the main stack (MTP layers excluded), in first-use order."""
        counts: dict[str, int] = {}
        for run in self.layers:
            counts[run.kind] = counts.get(run.kind, 0) + run.count
        return counts

    @property
    def indexer_owner_layers(self) -> list[int]:
        """Indices of the layers that run and cache their own indexer (DSA owners and MSA layers)."""
        return [i for i, kind in enumerate(self.layer_sequence) if self.layer_kinds[kind].owns_indexer]

    @property
    def mtp_layer_kind(self) -> str:
        return self.mtp_kind or self.layers[-1].kind

    def kv_bytes_per_token(self, kv_dtype: str | None = None) -> int:
        """Cache bytes per token over all main-stack layers, with every layer caching every token.

        Window layers are counted as if they cached every token; see ``ctxsim.counts`` for the
        context-dependent cache of window layers.
        """
        dtype = kv_dtype or self.kv_dtype
        return sum(self.layer_kinds[k].kv_bytes_per_token(dtype) * n for k, n in self.kind_counts.items())

    # --- parameters ------------------------------------------------------------------------

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.d_model

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.d_model

    @property
    def n_params(self) -> int:
        """Total parameters of the main stack, embeddings and LM head (MTP layers excluded).

        NOTE: norm weights and biases other than qkv biases are left out; they are below 0.01%
        of every preset.
        """
        layers = sum(self.layer_kinds[k].n_params(self.d_model) * n for k, n in self.kind_counts.items())
        return layers + self.embedding_params + self.lm_head_params

    @property
    def n_active_params(self) -> int:
        """Parameters a token's forward pass multiplies by (MTP layers excluded).

        That is every layer weight except the routed experts the token is not sent to, plus the
        LM head (the shared matrix when embeddings are tied). The input embedding is left out
        because it is a table lookup, not a matmul, so 2 * n_active_params approximates the weight
        matmul FLOPs per token. The gpt-oss model card counts active parameters this way. Other
        publishers' active figures may also count the input embedding or leave out the LM head,
        so they can differ from this by one embedding table.
        """
        layers = sum(self.layer_kinds[k].n_active_params(self.d_model) * n for k, n in self.kind_counts.items())
        return layers + self.vocab_size * self.d_model

    def count_params(self, *, active: bool, embeddings: Literal["both", "lm_head", "none"]) -> int:
        """Count main-stack parameters under an explicit embedding convention (MTP layers excluded).

        ``active`` counts only the routed experts a token is sent to, as ``n_active_params`` does.
        ``embeddings`` selects which vocabulary matrices count: ``"both"`` the input embedding and the
        LM head, ``"lm_head"`` only the LM head, ``"none"`` neither. Publishers differ here, so
        this lets a published figure be checked under the convention its source uses. With tied
        embeddings the one shared matrix counts once under ``"both"`` and ``"lm_head"``.
        ``count_params(active=False, embeddings="both")`` equals ``n_params`` and
        ``count_params(active=True, embeddings="lm_head")`` equals ``n_active_params``.
        """
        kinds = self.layer_kinds
        if active:
            layers = sum(kinds[k].n_active_params(self.d_model) * n for k, n in self.kind_counts.items())
        else:
            layers = sum(kinds[k].n_params(self.d_model) * n for k, n in self.kind_counts.items())
        vocab_matrix = self.vocab_size * self.d_model
        if embeddings == "none":
            return layers
        if embeddings == "lm_head":
            return layers + vocab_matrix
        if embeddings == "both":
            return layers + self.embedding_params + self.lm_head_params
        raise ValueError(f"embeddings={embeddings!r} is invalid: use 'both', 'lm_head' or 'none'")

    @property
    def n_mtp_params(self) -> int:
        """Parameters of the MTP layers (their transformer layer only; embeddings are shared)."""
        return self.n_mtp_layers * self.layer_kinds[self.mtp_layer_kind].n_params(self.d_model)

    @property
    def vocab_dtype(self) -> str:
        """Dtype of the embedding and LM head matrices."""
        return self.vocab_weight_dtype or self.weight_dtype

    def stored_bytes(self, other: int, routed: int = 0, vocab: int = 0) -> int:
        """Return the bytes of parameters stored in the model's dtypes.

        ``routed`` counts routed-expert parameters, ``vocab`` embedding and LM-head parameters,
        ``other`` the rest.
        """
        return (
            weight_bytes(other, self.weight_dtype)
            + weight_bytes(routed, self.expert_weight_dtype or self.weight_dtype)
            + weight_bytes(vocab, self.vocab_dtype)
        )

    def weight_bytes(self) -> int:
        """Bytes of all main-stack weights in their stored dtypes (MTP layers excluded)."""
        routed = 0
        for kind, n in self.kind_counts.items():
            ffn = self.layer_kinds[kind].ffn
            if ffn.kind == "moe":
                routed += n * ffn.n_routed_experts * ffn.expert_params(self.d_model)
        vocab = self.vocab_size * self.d_model * (1 if self.tie_word_embeddings else 2)
        return self.stored_bytes(self.n_params - routed - vocab, routed, vocab)
