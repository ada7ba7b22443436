"""Derived views of sweep frames: crossovers between ops, ratios between designs."""

from __future__ import annotations

import numpy as np
import pandas as pd


def major_ops(ops: pd.DataFrame, phase: str, quantity: str = "flops_per_token", min_share: float = 0.05) -> list[str]:
    """Ops of one phase that reach ``min_share`` of the phase total at some context of the sweep."""
    frame = ops[ops["phase"] == phase].pivot_table(index="context", columns="op", values=quantity, aggfunc="sum")
    total = frame.sum(axis=1)
    shares = frame.div(total.replace(0, np.nan), axis=0).max(axis=0)
    return [op for op in frame.columns if shares[op] >= min_share]


def crossovers(ops: pd.DataFrame, phase: str, quantity: str = "flops_per_token", min_share: float = 0.05) -> pd.DataFrame:
    """Contexts where one op's cost overtakes another's, in one phase.

    ``ops`` is the long frame of ``api.sweep`` (context, phase, op, quantity columns). Only ops
    that reach ``min_share`` of the phase total at some context are compared. In each row, ``op``
    rises above ``overtakes`` at ``context``, interpolated linearly in the cost difference
    against log context between the two sweep points around the sign change.
    """
    frame = ops[ops["phase"] == phase].pivot_table(index="context", columns="op", values=quantity, aggfunc="sum")
    frame = frame.sort_index()
    candidates = major_ops(ops, phase, quantity, min_share)

    log_n = np.log(frame.index.to_numpy(dtype=np.float64))
    rows = []
    for rising in candidates:
        for falling in candidates:
            if rising == falling:
                continue
            diff = frame[rising].to_numpy() - frame[falling].to_numpy()
            for i in np.flatnonzero((diff[:-1] < 0) & (diff[1:] >= 0)):
                t = diff[i] / (diff[i] - diff[i + 1])
                # Whole tokens: the crossing is interpolated between two swept contexts.
                context = round(float(np.exp(log_n[i] + t * (log_n[i + 1] - log_n[i]))))
                rows.append({"phase": phase, "op": rising, "overtakes": falling, "context": context, "quantity": quantity})
    out = pd.DataFrame(rows, columns=["phase", "op", "overtakes", "context", "quantity"])
    return out.sort_values("context", ignore_index=True)


def ratios(wide: pd.DataFrame, baseline: str, columns: list[str]) -> pd.DataFrame:
    """Divide each design's columns by the baseline design's, per context.

    ``wide`` has a ``design`` column plus ``context`` and ``columns``; the result is long:
    context, design, quantity, ratio.
    """
    base = wide.loc[wide["design"] == baseline, ["context", *columns]].set_index("context")
    aligned = base.reindex(wide["context"]).to_numpy()
    ratio = pd.DataFrame(wide[columns].to_numpy() / aligned, columns=columns)
    ratio.insert(0, "design", wide["design"].to_numpy())
    ratio.insert(0, "context", wide["context"].to_numpy())
    return ratio.melt(id_vars=["context", "design"], var_name="quantity", value_name="ratio")


def group_small(frame: pd.DataFrame, group: str, item: str, value: str, min_share: float = 0.02) -> pd.DataFrame:
    """Merge the ``item`` rows below ``min_share`` of their ``group`` total into one row named 'other'.

    An item is kept when it reaches the share in any group (so both bars of a breakdown use the
    same items).
    """
    totals = frame.groupby(group)[value].transform("sum")
    shares = (frame[value] / totals.where(totals != 0)).fillna(0.0)
    keep = set(frame.loc[shares >= min_share, item])
    out = frame.assign(**{item: frame[item].where(frame[item].isin(keep), "other")})
    return out.groupby([group, item], sort=False, as_index=False)[value].sum()
