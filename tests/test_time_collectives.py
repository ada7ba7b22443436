"""Collective times: alpha-beta ring formulas per NCCL bus-bandwidth conventions, by hand."""

import pytest

from ctxsim.counts.report import Op
from ctxsim.spec.errors import SpecError
from ctxsim.spec.hardware import hardware_from_dict, load_hardware
from ctxsim.time import collective_op_time, collective_time_s, parse_collective, ring_time_s

GIB = 2**30


def switch_profile(**scale_up):
    """8-rank switch, 400e9 B/s per direction, efficiency 1, base 5e-6 s, step 1e-6 s; NIC 50e9."""
    data = load_hardware("h100-sxm").model_dump(mode="json")
    data["name"] = "switch-test"
    data["scale_up"].update(
        bandwidth_bytes_per_s=400e9, efficiency=1.0, base_latency_s=5e-6, step_latency_s=1e-6, in_switch_reduction=None
    )
    data["scale_up"].update(scale_up)
    data["scale_out"].update(bandwidth_bytes_per_s=50e9, efficiency=1.0, base_latency_s=10e-6, step_latency_s=2e-6)
    return hardware_from_dict(data)


def test_ring_all_reduce_formula():
    # 2(n-1)/n x S / B plus latency: n = 8, S = 1 GiB, B = 400e9; latency 5e-6 + 2 x 7 x 1e-6.
    t = collective_time_s("all_reduce", GIB, 8, switch_profile())
    assert t == pytest.approx(2 * 7 / 8 * GIB / 400e9 + 5e-6 + 14 * 1e-6)


def test_all_gather_formula():
    # (n-1)/n x S / B with S the gathered output; latency 5e-6 + 3 x 1e-6 for n = 4.
    t = collective_time_s("all_gather", GIB, 4, switch_profile())
    assert t == pytest.approx(3 / 4 * GIB / 400e9 + 5e-6 + 3e-6)


def test_reduce_scatter_equals_all_gather():
    profile = switch_profile()
    assert collective_time_s("reduce_scatter", GIB, 4, profile) == collective_time_s("all_gather", GIB, 4, profile)


def test_all_to_all_formula():
    t = collective_time_s("all_to_all", GIB, 8, switch_profile())
    assert t == pytest.approx(7 / 8 * GIB / 400e9 + 5e-6 + 7e-6)


def test_broadcast_formula():
    t = collective_time_s("broadcast", GIB, 8, switch_profile())
    assert t == pytest.approx(GIB / 400e9 + 5e-6 + 7e-6)


def test_send_recv_formula():
    t = collective_time_s("send_recv", GIB, 2, switch_profile())
    assert t == pytest.approx(GIB / 400e9 + 5e-6 + 1e-6)


def test_single_rank_costs_nothing():
    assert collective_time_s("all_reduce", GIB, 1, switch_profile()) == 0.0


def test_efficiency_divides_bandwidth():
    t = ring_time_s("all_gather", GIB, 2, 400e9, 0.5, 0.0, 0.0)
    assert t == pytest.approx(1 / 2 * GIB / (400e9 * 0.5))


def test_in_switch_reduction_beats_ring():
    # NVLS: S / (B x 0.6) + 5e-6 + 2 x 1e-6 = 4.47 ms, below the ring's 2 x 7/8 x S / B = 4.70 ms.
    profile = switch_profile(in_switch_reduction={"min_ranks": 5, "efficiency": 0.6, "source": "test"})
    t = collective_time_s("all_reduce", GIB, 8, profile)
    assert t == pytest.approx(GIB / (400e9 * 0.6) + 5e-6 + 2e-6)


def test_in_switch_reduction_needs_min_ranks():
    # 4 ranks are below min_ranks 5, so the ring runs: 2 x 3/4 x S / B + 5e-6 + 6 x 1e-6.
    profile = switch_profile(in_switch_reduction={"min_ranks": 5, "efficiency": 0.6, "source": "test"})
    t = collective_time_s("all_reduce", GIB, 4, profile)
    assert t == pytest.approx(2 * 3 / 4 * GIB / 400e9 + 5e-6 + 6e-6)


def test_in_switch_reduction_only_for_all_reduce():
    profile = switch_profile(in_switch_reduction={"min_ranks": 5, "efficiency": 0.9, "source": "test"})
    t = collective_time_s("all_gather", GIB, 8, profile)
    assert t == pytest.approx(7 / 8 * GIB / 400e9 + 5e-6 + 7e-6)


def test_full_mesh_pair_uses_one_link():
    # MI300X: a pair all-reduces over one 64e9 B/s link at ring efficiency 0.7.
    mi300x = load_hardware("mi300x")
    up = mi300x.scale_up
    t = collective_time_s("all_reduce", GIB, 2, mi300x)
    assert t == pytest.approx(2 * 1 / 2 * GIB / (64e9 * 0.7) + up.base_latency_s + 2 * up.step_latency_s)


def test_hierarchical_all_reduce():
    # 16 ranks over 2 nodes of 8: intra reduce-scatter 7/8 x S / 400e9 (+5e-6 + 7e-6), inter
    # all-reduce of S/8 over 2 nodes 2 x 1/2 x (S/8) / 50e9 (+10e-6 + 2 x 2e-6), intra all-gather
    # as the reduce-scatter.
    t = collective_time_s("all_reduce", GIB, 16, switch_profile())
    intra = 7 / 8 * GIB / 400e9 + 5e-6 + 7e-6
    inter = 2 * 1 / 2 * (GIB / 8) / 50e9 + 10e-6 + 2 * 2e-6
    assert t == pytest.approx(2 * intra + inter)


def test_hierarchical_one_rank_per_node_is_a_nic_ring():
    # 4 ranks, one per node: a plain ring over the NICs, 2 x 3/4 x S / 50e9 + 10e-6 + 6 x 2e-6.
    t = collective_time_s("all_reduce", GIB, 4, switch_profile(), ranks_per_node=1)
    assert t == pytest.approx(2 * 3 / 4 * GIB / 50e9 + 10e-6 + 6 * 2e-6)


def test_hierarchical_all_gather():
    # 16 ranks, 8 per node: inter all-gather of S/8 over 2 nodes, then intra all-gather of S.
    t = collective_time_s("all_gather", GIB, 16, switch_profile())
    inter = 1 / 2 * (GIB / 8) / 50e9 + 10e-6 + 2e-6
    intra = 7 / 8 * GIB / 400e9 + 5e-6 + 7e-6
    assert t == pytest.approx(inter + intra)


def test_hierarchical_all_to_all_takes_slower_link():
    # 16 ranks, 8 per node: 7/16 of S on-node at 400e9 and 8/16 of S off-node at 50e9 in parallel.
    t = collective_time_s("all_to_all", GIB, 16, switch_profile())
    latency = 5e-6 + 10e-6 + 7 * 1e-6 + 1 * 2e-6
    assert t == pytest.approx(latency + 8 / 16 * GIB / 50e9)


def test_cross_node_send_recv_uses_nic():
    t = collective_time_s("send_recv", GIB, 2, switch_profile(), ranks_per_node=1)
    assert t == pytest.approx(GIB / 50e9 + 10e-6 + 2e-6)


def test_no_scale_out_limits_group_to_domain():
    with pytest.raises(SpecError, match="no scale-out network"):
        collective_time_s("all_reduce", GIB, 16, load_hardware("rtx-4090"))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("comm.tp_all_reduce", ("tp", "all_reduce")),
        ("comm.ep_dispatch", ("ep", "all_to_all")),
        ("comm.ep_combine", ("ep", "all_to_all")),
        ("comm.layer_split_broadcast", ("layer_split", "broadcast")),
        ("comm.pp_send_recv", ("pp", "send_recv")),
        ("comm.cp_all_gather", ("cp", "all_gather")),
    ],
)
def test_parse_collective_names(name, expected):
    assert parse_collective(name) == expected


def test_parse_collective_unknown_raises():
    with pytest.raises(ValueError, match="cannot read collective op name 'comm.tp_gossip'"):
        parse_collective("comm.tp_gossip")


def test_collective_op_chunked_messages():
    # A prefill in 4 chunks sends 4 all-reduces of S/4: 4 x (2 x 7/8 x S/4 / B + 5e-6 + 14e-6).
    op = Op("comm.tp_all_reduce", "collective", "prefill", 80, 0, 0, GIB, GIB, "dense")
    t = collective_op_time(op, switch_profile(), {"tp": 8}, messages=4)
    assert t.time_s == pytest.approx(4 * (2 * 7 / 8 * (GIB / 4) / 400e9 + 5e-6 + 14e-6))
    assert t.total_s == pytest.approx(80 * t.time_s)
    assert t.bound == "communication"


def test_collective_op_size_is_larger_of_read_and_written():
    # An all-gather reads S/n and writes S; S sets the time.
    op = Op("comm.cp_all_gather", "collective", "decode", 1, 0, 0, GIB // 4, GIB, "dense")
    t = collective_op_time(op, switch_profile(), {"cp": 4})
    assert t.time_s == pytest.approx(3 / 4 * GIB / 400e9 + 5e-6 + 3e-6)


def test_collective_op_in_group_of_one_is_free():
    op = Op("comm.tp_all_reduce", "collective", "decode", 32, 0, 0, GIB, GIB, "dense")
    assert collective_op_time(op, switch_profile(), {"tp": 1}).time_s == 0.0
