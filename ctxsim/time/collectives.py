"""Collective times with an alpha-beta model, per the NCCL bus-bandwidth conventions.

``size_bytes`` is S, the NCCL "total array size": the buffer for all-reduce and broadcast, the
full gathered output for all-gather, the full input for reduce-scatter, each rank's send buffer
for all-to-all, and the message for send/recv. In one scale-up domain, with per-rank
unidirectional bandwidth B, ring efficiency e, fixed latency a0 and per-step latency a:

    all-reduce (ring)           a0 + 2(n-1) a + 2(n-1)/n * S / (B e)
    all-gather, reduce-scatter  a0 +  (n-1) a +  (n-1)/n * S / (B e)
    all-to-all                  a0 +  (n-1) a +  (n-1)/n * S / (B e)
    broadcast (pipelined ring)  a0 +  (n-1) a +            S / (B e)
    send/recv                   a0 +        a +            S / (B e)

A switch with in-network reduction (NVLS) runs an all-reduce in ``a0 + 2a + S / (B e_nvls)``
from ``min_ranks`` ranks up; the faster of ring and NVLS is used, as NCCL's tuner picks.
Groups larger than one domain run hierarchically: see ``hierarchical_time_s``.
"""

from __future__ import annotations

import math
from typing import Mapping

from ctxsim.counts.arith import maximum, minimum
from ctxsim.counts.report import Number, Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import HardwareProfile
from ctxsim.time.roofline import OpTime

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")

# Parallel groups a collective op can run in, longest name first so that prefix matching is exact.
GROUPS = ("layer_split", "tp", "pp", "ep", "dp", "cp")

# Other spellings of collectives in op names. comm.cp_kv moves the volume of an all-gather in
# either cp mode (a ring passes every rank's block to every other rank).
_ALIASES = {"dispatch": "all_to_all", "combine": "all_to_all", "kv": "all_gather", "send": "send_recv", "recv": "send_recv", "p2p": "send_recv"}

# Bandwidth factor and ring steps (latency terms) of each collective on n ranks.
_FACTOR = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "broadcast": lambda n: 1.0,
    "send_recv": lambda n: 1.0,
}
_STEPS = {
    "all_reduce": lambda n: 2 * (n - 1),
    "all_gather": lambda n: n - 1,
    "reduce_scatter": lambda n: n - 1,
    "all_to_all": lambda n: n - 1,
    "broadcast": lambda n: n - 1,
    "send_recv": lambda n: 1,
}


def _check_collective(collective: str) -> None:
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective '{collective}': use one of {', '.join(COLLECTIVES)}")


def ring_time_s(
    collective: str,
    size_bytes: Number,
    n_ranks: int,
    bandwidth_bytes_per_s: float,
    efficiency: float,
    base_latency_s: float,
    step_latency_s: float,
) -> Number:
    """Alpha-beta time of one collective over one level of links (see the module docstring)."""
    _check_collective(collective)
    if n_ranks <= 1:
        return 0.0
    latency = base_latency_s + _STEPS[collective](n_ranks) * step_latency_s
    return latency + _FACTOR[collective](n_ranks) * size_bytes / (bandwidth_bytes_per_s * efficiency)


def in_domain_time_s(collective: str, size_bytes: Number, n_ranks: int, profile: HardwareProfile) -> Number:
    """Time of a collective whose ``n_ranks`` ranks all sit in one scale-up domain."""
    up = profile.scale_up
    bandwidth = up.group_bandwidth_bytes_per_s(n_ranks)
    ring = ring_time_s(collective, size_bytes, n_ranks, bandwidth, up.efficiency, up.base_latency_s, up.step_latency_s)
    isr = up.in_switch_reduction
    if collective != "all_reduce" or isr is None or n_ranks < isr.min_ranks:
        return ring
    in_switch = up.base_latency_s + 2 * up.step_latency_s + size_bytes / (bandwidth * isr.efficiency)
    return minimum(ring, in_switch)


def hierarchical_time_s(
    collective: str, size_bytes: Number, n_ranks: int, ranks_per_node: int, profile: HardwareProfile
) -> Number:
    """Time of a collective over ``n_ranks`` spread over nodes of ``ranks_per_node`` ranks each.

    Each rank has its own NIC share. An all-reduce runs as an intra-node reduce-scatter, an
    inter-node all-reduce of each rank's 1/g shard over all NICs in parallel, and an intra-node
    all-gather (the decomposition stas00's ml-engineering network chapter validates on 4x8 B200).
    All-gather and reduce-scatter run one inter-node and one intra-node stage. All-to-all sends
    the on-node share over scale-up and the off-node share over the NICs at the same time.
    Broadcast and send/recv are limited by the slower of the two levels.
    NOTE: the stages are added, not overlapped; measured times fall between the two.
    """
    _check_collective(collective)
    out = profile.scale_out
    if out is None:
        raise SpecError(
            f"hardware '{profile.name}' has no scale-out network, so a group of {n_ranks} ranks cannot exceed "
            f"one node of {profile.scale_up.domain_size}: use at most {profile.scale_up.domain_size} devices"
        )
    g = ranks_per_node
    k = math.ceil(n_ranks / g)
    up = profile.scale_up

    def intra(name: str, size: Number) -> Number:
        return in_domain_time_s(name, size, g, profile)

    def inter(name: str, size: Number) -> Number:
        return ring_time_s(name, size, k, out.bandwidth_bytes_per_s, out.efficiency, out.base_latency_s, out.step_latency_s)

    if collective == "all_reduce":
        return intra("reduce_scatter", size_bytes) + inter("all_reduce", size_bytes / g) + intra("all_gather", size_bytes)
    if collective in ("all_gather", "reduce_scatter"):
        return inter(collective, size_bytes / g) + intra(collective, size_bytes)
    up_rate = up.group_bandwidth_bytes_per_s(g) * up.efficiency if g > 1 else math.inf
    out_rate = out.bandwidth_bytes_per_s * out.efficiency
    latency = up.base_latency_s + out.base_latency_s
    if collective == "all_to_all":
        latency += (g - 1) * up.step_latency_s + (k - 1) * out.step_latency_s
        on_node = (g - 1) / n_ranks * size_bytes / up_rate
        off_node = (n_ranks - g) / n_ranks * size_bytes / out_rate
        return latency + maximum(on_node, off_node)
    if collective == "broadcast":
        latency += (g - 1) * up.step_latency_s + (k - 1) * out.step_latency_s
        return latency + size_bytes / min(up_rate, out_rate)
    return out.base_latency_s + out.step_latency_s + size_bytes / out_rate


def collective_time_s(
    collective: str,
    size_bytes: Number,
    n_ranks: int,
    profile: HardwareProfile,
    ranks_per_node: int | None = None,
) -> Number:
    """Time of one collective of ``size_bytes`` (NCCL total array size) over ``n_ranks`` ranks.

    ``ranks_per_node`` is how many of the group's ranks share one scale-up domain; by default the
    group fills domains, ``min(n_ranks, domain_size)``. A group that fits in one domain runs there;
    a larger one runs hierarchically over the scale-out network.
    """
    _check_collective(collective)
    if n_ranks <= 1:
        return 0.0
    domain = profile.scale_up.domain_size
    g = min(n_ranks, domain) if ranks_per_node is None else ranks_per_node
    if g > domain or g < 1:
        raise ValueError(f"ranks_per_node {g} must be between 1 and the domain size {domain}")
    if g >= n_ranks:
        return in_domain_time_s(collective, size_bytes, n_ranks, profile)
    return hierarchical_time_s(collective, size_bytes, n_ranks, g, profile)


def parse_collective(op_name: str) -> tuple[str, str]:
    """Split a collective op name ``comm.<group>_<collective>`` into (group, collective).

    ``comm.tp_all_reduce`` gives ("tp", "all_reduce"); ``comm.ep_dispatch`` gives
    ("ep", "all_to_all"); ``comm.layer_split_broadcast`` gives ("layer_split", "broadcast").
    """
    rest = op_name.removeprefix("comm.")
    for group in GROUPS:
        if rest.startswith(group + "_"):
            name = rest[len(group) + 1 :]
            name = _ALIASES.get(name, name)
            if name in COLLECTIVES:
                return group, name
    raise ValueError(
        f"cannot read collective op name '{op_name}': use comm.<group>_<collective> with group in "
        f"{', '.join(GROUPS)} and collective in {', '.join(COLLECTIVES + tuple(_ALIASES))}"
    )


def collective_size_bytes(op: Op) -> Number:
    """S of one run of a collective op: the larger of its bytes read and written.

    That is the buffer for all-reduce, all-to-all and broadcast, the gathered output for
    all-gather (which reads S/n and writes S), and the input for reduce-scatter.
    """
    return maximum(op.bytes_read, op.bytes_written)


def collective_op_time(
    op: Op,
    profile: HardwareProfile,
    group_sizes: Mapping[str, int],
    messages: Number = 1,
    ranks_per_node: Mapping[str, int] | None = None,
) -> OpTime:
    """Time of one collective op record, split into ``messages`` equal messages per run.

    ``group_sizes`` and ``ranks_per_node`` are looked up by the op's name first, then by its
    group (tp, pp, ep, dp, cp, layer_split). A prefill in n chunks sends each collective once
    per chunk, so it pays the latency n times on messages of S/n. A send/recv involves two
    ranks whenever its group has more than one.
    """
    group, collective = parse_collective(op.name)
    n = group_sizes.get(op.name, group_sizes.get(group, 1))
    if collective == "send_recv":
        n = 2 if n > 1 else 1
    per_node_by = ranks_per_node or {}
    per_node = per_node_by.get(op.name, per_node_by.get(group))
    if per_node is not None:
        per_node = min(per_node, n)
    size = collective_size_bytes(op)
    time_s = messages * collective_time_s(collective, size / messages, n, profile, per_node)
    return OpTime(
        name=op.name,
        kind=op.kind,
        phase=op.phase,
        layer_kind=op.layer_kind,
        count=op.count,
        compute_s=0.0,
        memory_s=0.0,
        communication_s=time_s,
        launch_s=0.0,
        time_s=time_s,
        bound="communication",
    )
