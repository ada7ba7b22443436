"""Workload: what the model is asked to do (phase, batch, context length, chunking)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ctxsim.spec.dtypes import KVDtype

Phase = Literal["prefill", "decode", "both"]


class Workload(BaseModel):
    """One estimate's workload.

    ``prefill`` runs the tokens ``cached_context + 1 .. context`` (1-based positions) causally, in
    chunks of ``chunk_size`` tokens when set. ``decode`` runs one new token at position ``context``,
    so it attends the same keys as the last row of a ``context``-token prefill. ``both`` reports
    the two.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase = Field("both", description="prefill, decode, or both.")
    context: Annotated[int, Field(gt=0, strict=True)] = Field(description="Context length N in tokens.")
    batch: Annotated[int, Field(gt=0, strict=True)] = Field(1, description="Sequences processed together.")
    chunk_size: Annotated[int, Field(gt=0, strict=True)] | None = Field(
        None, description="Prefill chunk size C in tokens; null runs the prefill as one chunk."
    )
    cached_context: Annotated[int, Field(ge=0, strict=True)] = Field(
        0, description="Tokens already in the cache before the prefill starts (prefix cache hit)."
    )
    kv_dtype: KVDtype | None = Field(None, description="KV-cache dtype; null uses the model's default.")
    kv_policy: Literal["need", "paged"] = Field(
        "need", description="'need': what the architecture needs; 'paged': what a paged engine reserves."
    )
    page_size: Annotated[int, Field(gt=0, strict=True)] = Field(
        64, description="Tokens per KV page under the 'paged' policy."
    )
    execution: Literal["gathered", "masked"] = Field(
        "gathered", description="'gathered': sparse kernels touch selected keys only; 'masked': dense scores plus a mask."
    )
    mla_mode: Literal["auto", "expanded", "absorbed"] = Field(
        "auto",
        description="MLA execution: 'auto' expands K/V for dense prefill and absorbs for decode and sparse layers.",
    )

    @model_validator(mode="after")
    def _cached_context_below_context(self) -> "Workload":
        if self.phase == "decode" and self.cached_context:
            raise ValueError(
                f"cached_context {self.cached_context} applies to the prefill only: leave it out with phase decode"
            )
        if self.cached_context >= self.context:
            raise ValueError(
                f"cached_context {self.cached_context} must be less than context {self.context}: "
                "the prefill needs at least one new token"
            )
        return self

    @property
    def new_tokens(self) -> int:
        """Tokens the prefill computes."""
        return self.context - self.cached_context
