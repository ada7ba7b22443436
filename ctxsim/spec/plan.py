"""ParallelPlan: how a model is laid out over devices."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

_Degree = Annotated[int, Field(gt=0, strict=True)]


class ParallelPlan(BaseModel):
    """Parallel degrees; the world size is their product (layer_split regroups existing ranks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tp: _Degree = Field(1, description="Tensor parallel degree: heads and FFN columns split.")
    pp: _Degree = Field(1, description="Pipeline parallel degree: layers split into stages.")
    ep: _Degree = Field(1, description="Expert parallel degree: routed experts split.")
    dp: _Degree = Field(1, description="Data parallel degree: requests split.")
    cp: _Degree = Field(1, description="Context parallel degree: the sequence split.")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp * self.cp
