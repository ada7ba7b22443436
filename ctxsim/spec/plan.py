"""ParallelPlan: how a model is laid out over devices, and the rules a plan must follow.

Degrees and how they combine:

- The world size is ``tp x pp x dp x cp``: every device has one coordinate along each of the
  four axes. Ranks are numbered with tp fastest, then cp, then pp, then dp.
- ``ep`` is not a factor of the world size. It regroups the ranks that share the MoE layers of
  one pipeline stage, the *expert group*: the tp ranks, or the tp x dp ranks with attention data
  parallelism (``attention_dp``), as in vLLM's data-parallel deployment, where the expert
  layers of dp x tp ranks are one tensor- or expert-parallel group. ``ep`` must divide the
  expert group, and the remaining expert-group ranks split each routed expert's width:
  ``moe_tp = expert group / ep``.
- ``layer_split`` (group size G) also regroups existing ranks. It shards the KV cache along the
  layer axis among G ranks that would otherwise hold identical copies of it (an MLA latent on
  every tp rank, a replicated KV head, a cache all-gathered over cp).

Checks that need the model (heads, layers, experts) live in ``check_plan``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_Degree = Annotated[int, Field(gt=0, strict=True)]

EPMode = Literal["auto", "all_to_all", "all_gather"]
CPMode = Literal["ring", "all_gather"]
CPSharding = Literal["contiguous", "zigzag"]


class ParallelPlan(BaseModel):
    """Parallel degrees and the options of each; the world size is tp x pp x dp x cp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: _Degree = Field(1, description="Tensor parallel degree: heads, FFN columns and the vocabulary split.")
    pp: _Degree = Field(1, description="Pipeline parallel degree: layers split into contiguous stages.")
    ep: _Degree = Field(
        1, description="Expert parallel degree: routed experts split over the expert group (tp, or tp x dp with attention_dp)."
    )
    dp: _Degree = Field(1, description="Data parallel degree: requests split; full replicas unless attention_dp.")
    cp: _Degree = Field(1, description="Context parallel degree: the prompt's tokens split over ranks (prefill).")
    attention_dp: bool = Field(
        False, description="Attention data parallel: dp ranks hold their own requests but share the MoE layers."
    )
    ep_mode: EPMode = Field(
        "auto",
        description="How MoE tokens reach experts across dp ranks: all_to_all, all_gather, or auto "
        "(all_to_all when tp is 1 and ep spans the expert group).",
    )
    cp_mode: CPMode = Field(
        "ring", description="ring: each rank keeps its token shard of KV, K/V pass around a ring; "
        "all_gather: every rank gathers and keeps all K/V."
    )
    cp_sharding: CPSharding = Field(
        "zigzag", description="contiguous: rank i gets the i-th block; zigzag: blocks i and 2cp-1-i (balances causal work)."
    )
    layer_split: _Degree = Field(
        1, description="LayerSplit group size G: G ranks holding identical KV keep 1/G of the layers each."
    )
    layer_split_scratch: Annotated[int, Field(ge=0, strict=True)] = Field(
        1, description="Scratch slots per rank for a broadcast layer's KV (SGLang's CP LayerSplit 1, vllm-ascend KVPP 2)."
    )
    pp_layers: tuple[_Degree, ...] | None = Field(
        None, description="Layers per pipeline stage; default: even split, the first n_layer % pp stages one more."
    )

    # --- validators, one rule each -------------------------------------------------------

    @model_validator(mode="after")
    def _ep_divides_expert_group(self) -> "ParallelPlan":
        group = self.expert_group_size
        if group % self.ep:
            shape = f"tp {self.tp} x dp {self.dp}" if self.attention_dp else f"tp {self.tp}"
            hint = " or set attention_dp so that dp ranks share experts" if not self.attention_dp and self.dp > 1 else ""
            relation = "exceeds" if self.ep > group else "does not divide"
            raise ValueError(
                f"ep {self.ep} {relation} the expert group ({shape} = {group} ranks): use an ep that divides it{hint}"
            )
        return self

    @model_validator(mode="after")
    def _all_to_all_needs_whole_experts(self) -> "ParallelPlan":
        if self.ep_mode == "all_to_all" and (self.tp != 1 or self.ep != self.expert_group_size or self.ep == 1):
            raise ValueError(
                f"ep_mode all_to_all needs tp 1 and ep equal to the expert group (attention_dp with dp = ep > 1), "
                f"got tp {self.tp}, ep {self.ep}, expert group {self.expert_group_size}: use ep_mode all_gather or auto"
            )
        return self

    @model_validator(mode="after")
    def _pp_layers_match_pp(self) -> "ParallelPlan":
        if self.pp_layers is not None and len(self.pp_layers) != self.pp:
            raise ValueError(
                f"pp_layers has {len(self.pp_layers)} stages but pp is {self.pp}: give one layer count per stage"
            )
        return self

    @model_validator(mode="after")
    def _layer_split_within_stage_ranks(self) -> "ParallelPlan":
        ranks = self.tp * self.cp
        if ranks % self.layer_split:
            raise ValueError(
                f"layer_split {self.layer_split} does not divide the tp x cp = {ranks} ranks of a stage: "
                "use a group size that divides them"
            )
        return self

    # --- derived numbers -------------------------------------------------------------------

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def expert_group_size(self) -> int:
        """Ranks of one stage that share the MoE layers: tp, times dp with attention_dp."""
        return self.tp * (self.dp if self.attention_dp else 1)

    @property
    def moe_tp(self) -> int:
        """Ranks that split one routed expert's width: the expert group over ep."""
        return self.expert_group_size // self.ep

    @property
    def token_groups(self) -> int:
        """Distinct token sets in one expert group: dp with attention_dp, else 1 (tp ranks share tokens)."""
        return self.dp if self.attention_dp else 1

    @property
    def resolved_ep_mode(self) -> str:
        """The MoE token path: 'none' when the expert group shares its tokens, else all_to_all or all_gather."""
        if self.token_groups == 1:
            return "none"
        if self.ep_mode != "auto":
            return self.ep_mode
        if self.tp == 1 and self.ep == self.expert_group_size:
            return "all_to_all"
        return "all_gather"

    @property
    def is_single_device(self) -> bool:
        return self.world_size == 1

    def coordinates(self, rank: int) -> dict[str, int]:
        """Position of a global rank along each axis: tp fastest, then cp, pp and dp."""
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside the world of {self.world_size} ranks")
        rest, tp_rank = divmod(rank, self.tp)
        rest, cp_rank = divmod(rest, self.cp)
        dp_rank, pp_rank = divmod(rest, self.pp)
        return {"tp": tp_rank, "cp": cp_rank, "pp": pp_rank, "dp": dp_rank}

    def rank_of(self, tp: int = 0, cp: int = 0, pp: int = 0, dp: int = 0) -> int:
        """Global rank at the given coordinates (the inverse of ``coordinates``)."""
        return ((dp * self.pp + pp) * self.cp + cp) * self.tp + tp

    def describe(self) -> str:
        """Short text such as 'tp 8 x pp 2 (ep 8, layer_split 8)'."""
        degrees = [f"{name} {getattr(self, name)}" for name in ("tp", "pp", "dp", "cp") if getattr(self, name) > 1]
        extras = []
        if self.ep > 1:
            extras.append(f"ep {self.ep}")
        if self.attention_dp and self.dp > 1:
            extras.append("attention-DP")
        if self.cp > 1:
            extras.append(f"cp {self.cp_mode} {self.cp_sharding}")
        if self.layer_split > 1:
            extras.append(f"layer_split {self.layer_split} (+{self.layer_split_scratch} scratch)")
        text = " x ".join(degrees) or "1 device"
        return text + (f" ({', '.join(extras)})" if extras else "")

    def check_world_size(self, devices: int, flag: str = "devices") -> None:
        """Raise ValueError unless ``devices`` equals tp x pp x dp x cp."""
        if devices != self.world_size:
            raise ValueError(
                f"{flag} {devices} differs from tp {self.tp} x pp {self.pp} x dp {self.dp} x cp {self.cp} = "
                f"{self.world_size}: make them agree"
            )


def stage_layer_counts(n_layer: int, plan: ParallelPlan) -> tuple[int, ...]:
    """Layers of each pipeline stage: ``pp_layers`` when given, else n_layer // pp each and one
    more for the first n_layer % pp stages (the split ``ctxsim.time`` uses)."""
    if plan.pp_layers is not None:
        return plan.pp_layers
    base, extra = divmod(n_layer, plan.pp)
    return tuple(base + (1 if stage < extra else 0) for stage in range(plan.pp))


def balanced_blocks(items: list[int], groups: int) -> list[list[int]]:
    """Split ``items`` into ``groups`` contiguous blocks whose sizes differ by at most one (larger first)."""
    base, extra = divmod(len(items), groups)
    blocks, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        blocks.append(items[start : start + size])
        start += size
    return blocks


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def gcd_all(values: list[int]) -> int:
    out = 0
    for v in values:
        out = math.gcd(out, v)
    return out


# ---------------------------------------------------------------------------------------------
# Checks against a model and a workload


def kv_replication(spec, plan: ParallelPlan) -> dict[str, int]:
    """How many tp ranks hold a copy of each cached KV head, per layer kind.

    A GQA layer with tp <= n_kv_head splits its heads (1). With tp > n_kv_head each KV head is
    replicated on tp / n_kv_head ranks. An MLA latent is one shared head, so all tp ranks hold it.
    """
    out = {}
    for kind, layer in spec.layer_kinds.items():
        n_kv = layer.attention.n_kv_head if layer.attention.kind == "gqa" else 1
        out[kind] = max(1, plan.tp // n_kv)
    return out


def kv_replica_ranks(spec, plan: ParallelPlan) -> int:
    """Ranks of one stage and one dp rank that hold identical KV for every layer kind.

    That is the tp ranks sharing a KV head (the gcd over layer kinds of the replication), times
    cp when cp all-gathers the cache onto every cp rank.
    """
    tp_copies = gcd_all(list(kv_replication(spec, plan).values()))
    return tp_copies * (plan.cp if plan.cp_mode == "all_gather" else 1)


def _check_heads(spec, plan: ParallelPlan, fail) -> None:
    for kind, layer in spec.layer_kinds.items():
        att = layer.attention
        if att.n_head % plan.tp:
            fail(f"tp {plan.tp} does not divide n_head {att.n_head} of layer kind '{kind}': use a tp that divides it")
        if att.kind == "gqa" and att.n_kv_head % plan.tp and plan.tp % att.n_kv_head:
            fail(
                f"tp {plan.tp} and n_kv_head {att.n_kv_head} of layer kind '{kind}' do not divide one another: "
                "KV heads can only be split or replicated evenly"
            )


def _check_ffn(spec, plan: ParallelPlan, fail) -> None:
    has_moe = False
    for kind, layer in spec.layer_kinds.items():
        ffn = layer.ffn
        if ffn.kind == "dense":
            if ffn.intermediate_size % plan.tp:
                fail(f"tp {plan.tp} does not divide intermediate_size {ffn.intermediate_size} of layer kind '{kind}'")
            continue
        has_moe = True
        if ffn.n_routed_experts % plan.ep:
            fail(
                f"ep {plan.ep} does not divide the {ffn.n_routed_experts} routed experts of layer kind '{kind}': "
                "use an ep that divides them"
            )
        if ffn.moe_intermediate_size % plan.moe_tp:
            fail(
                f"the expert group over ep ({plan.moe_tp} ranks) does not divide moe_intermediate_size "
                f"{ffn.moe_intermediate_size} of layer kind '{kind}': raise ep"
            )
        shared = ffn.n_shared_experts * ffn.shared_width
        if shared % plan.tp:
            fail(f"tp {plan.tp} does not divide the shared-expert width {shared} of layer kind '{kind}'")
    if plan.ep > 1 and not has_moe:
        fail(f"ep {plan.ep} needs a MoE model, but {spec.name} has no MoE layer: drop ep")


def _check_stages(spec, plan: ParallelPlan, fail) -> None:
    n_layer = spec.n_layer
    if plan.pp > n_layer:
        fail(f"pp {plan.pp} exceeds the {n_layer} layers of {spec.name}: use at most {n_layer} stages")
    if plan.pp_layers is not None and sum(plan.pp_layers) != n_layer:
        fail(f"pp_layers {list(plan.pp_layers)} sum to {sum(plan.pp_layers)}, not the {n_layer} layers of {spec.name}")


def _check_layer_split(spec, plan: ParallelPlan, fail) -> None:
    if plan.layer_split == 1:
        return
    replicas = kv_replica_ranks(spec, plan)
    if replicas % plan.layer_split:
        fail(
            f"layer_split {plan.layer_split} does not divide the {replicas} ranks of a stage that hold identical KV "
            f"(tp ranks sharing a KV head{', times cp' if plan.cp_mode == 'all_gather' else ''}): "
            "use a group size that divides it"
        )
    fewest = min(stage_layer_counts(spec.n_layer, plan))
    if plan.layer_split > fewest:
        fail(f"layer_split {plan.layer_split} exceeds the {fewest} layers of the smallest stage: use at most {fewest}")


def _check_cp(spec, plan: ParallelPlan, workload, fail) -> None:
    if plan.cp == 1:
        return
    sparse = [k for k, layer in spec.layer_kinds.items() if layer.selection.kind in ("dsa", "msa")]
    if plan.cp_mode == "ring" and sparse:
        fail(
            f"cp_mode ring cannot run the top-k selection of layer kind '{sparse[0]}', which needs every index "
            "key first: use cp_mode all_gather"
        )
    if workload is None:
        return
    if workload.phase != "prefill":
        fail(
            f"cp {plan.cp} splits a prompt's prefill; decode with cp is not modelled: use phase prefill "
            "(--phase prefill), and for decode count the cp ranks as dp replicas, as ctxsim size does"
        )
    tokens = workload.new_tokens
    if workload.chunk_size is not None and workload.chunk_size < tokens:
        fail(f"cp {plan.cp} splits one prefill pass; chunk_size {workload.chunk_size} makes several: drop the chunk size")
    pieces = plan.cp * (2 if plan.cp_sharding == "zigzag" else 1)
    if tokens % pieces:
        fail(
            f"cp {plan.cp} with {plan.cp_sharding} sharding splits the {tokens} new tokens into {pieces} equal "
            f"blocks: use a token count divisible by {pieces}"
        )
    if plan.cp_mode == "ring" and workload.cached_context:
        fail("cp_mode ring shards the whole context, so a cached prefix is not modelled: use cp_mode all_gather")


def check_plan(spec, plan: ParallelPlan, workload=None) -> None:
    """Raise SpecError (one line: value and fix) when ``plan`` cannot run ``spec`` (and ``workload``)."""
    from ctxsim.spec.errors import SpecError

    def fail(message: str) -> None:
        raise SpecError(f"plan {plan.describe()}: {message}")

    _check_heads(spec, plan, fail)
    _check_ffn(spec, plan, fail)
    _check_stages(spec, plan, fail)
    _check_layer_split(spec, plan, fail)
    _check_cp(spec, plan, workload, fail)
