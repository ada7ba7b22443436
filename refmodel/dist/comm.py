"""Collectives of the multi-rank reference model, each one recorded under its ctxsim op name.

Every call goes through ``Comm``, which runs the torch.distributed collective and records its
size S in the bytes ctxsim counts, per (phase, op name): the caller passes the counted bytes of
one element or one row (bf16 activations, fp32 logits, cache records), because the reference
model computes in float64 while ctxsim counts the serving dtypes. S follows the NCCL-tests
conventions of ``ctxsim.counts.comm``: the buffer of an all-reduce or broadcast, the gathered
output of an all-gather, the input of a reduce-scatter, the message of a send. An all-to-all
records what this rank sends and what it receives separately.

Tensors travel as raw bytes when gloo cannot reduce or move their dtype (bf16, fp8 and packed
fp4 cache parts); sizes recorded are unaffected. Bookkeeping messages that ctxsim does not count
(split sizes of an all-to-all, positions held by a broadcast cache) are recorded under
``meta`` so that nothing moves unseen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

SETUP = "setup"


@dataclass
class Traffic:
    """Bytes of one op name in one phase on one rank."""

    size: int = 0
    sent: int = 0
    received: int = 0
    calls: int = 0


@dataclass
class Comm:
    """Runs and records the collectives of one rank; ``phase`` names the phase being counted."""

    rank: int
    phase: str = SETUP
    traffic: dict[tuple[str, str], Traffic] = field(default_factory=dict)

    def _record(self, name: str, size: int, sent: int = 0, received: int = 0) -> None:
        entry = self.traffic.setdefault((self.phase, name), Traffic())
        entry.size += int(size)
        entry.sent += int(sent)
        entry.received += int(received)
        entry.calls += 1

    def meta(self, size: int) -> None:
        """Record bytes of bookkeeping that ctxsim does not count."""
        self._record("meta", size)

    # --- collectives over a group -----------------------------------------------------------

    def all_reduce(self, x: torch.Tensor, group, name: str, element_bytes: int) -> torch.Tensor:
        """Sum ``x`` over the group (in place) and return it."""
        dist.all_reduce(x, group=group)
        self._record(name, x.numel() * element_bytes)
        return x

    def all_gather(self, x: torch.Tensor, group, name: str, element_bytes: int, dim: int = 0) -> torch.Tensor:
        """Concatenate every rank's equal-shape ``x`` along ``dim``, in group rank order."""
        size = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        out = torch.cat(parts, dim=dim)
        self._record(name, out.numel() * element_bytes)
        return out

    def reduce_scatter(self, x: torch.Tensor, group, name: str, element_bytes: int) -> torch.Tensor:
        """Sum ``x`` ``[n * rows, ...]`` over the group and return this rank's block of rows."""
        size = dist.get_world_size(group)
        inputs = [part.contiguous() for part in x.chunk(size, dim=0)]
        out = torch.empty_like(inputs[0])
        dist.reduce_scatter(out, inputs, group=group)
        self._record(name, x.numel() * element_bytes)
        return out

    def all_to_all(self, rows: torch.Tensor, send_counts: list[int], group, name: str, row_bytes: int) -> tuple[torch.Tensor, list[int]]:
        """Send ``rows`` in blocks of ``send_counts`` rows to the group's ranks; return the rows received
        and the count from each rank. The counts themselves go first, as bookkeeping."""
        size = dist.get_world_size(group)
        counts_out = torch.tensor(send_counts, dtype=torch.int64)
        counts_in = torch.empty(size, dtype=torch.int64)
        dist.all_to_all_single(counts_in, counts_out, group=group)
        self.meta(2 * counts_out.numel() * counts_out.element_size())
        recv_counts = counts_in.tolist()
        received = rows.new_empty((sum(recv_counts), *rows.shape[1:]))
        dist.all_to_all_single(received, rows.contiguous(), recv_counts, send_counts, group=group)
        sent_bytes = rows.shape[0] * row_bytes
        received_bytes = received.shape[0] * row_bytes
        self._record(name, sent_bytes, sent=sent_bytes, received=received_bytes)
        return received, recv_counts

    def broadcast_bytes(self, x: torch.Tensor, src: int, group, name: str, size_bytes: int) -> torch.Tensor:
        """Broadcast ``x`` (any dtype, moved as raw bytes) from global rank ``src``; returns it."""
        raw = _as_bytes(x)
        dist.broadcast(raw, src=src, group=group)
        if name == "meta":
            self.meta(size_bytes)
        else:
            self._record(name, size_bytes)
        return raw.view(x.dtype).view(x.shape)

    # --- point to point ---------------------------------------------------------------------

    def send(self, x: torch.Tensor, dst: int, name: str, size_bytes: int) -> None:
        dist.send(_as_bytes(x), dst=dst)
        self._record(name, size_bytes, sent=size_bytes)

    def recv(self, like: torch.Tensor, src: int) -> torch.Tensor:
        """Receive a tensor shaped and typed like ``like`` from ``src`` (the sender records it)."""
        raw = _as_bytes(torch.empty_like(like))
        dist.recv(raw, src=src)
        return raw.view(like.dtype).view(like.shape)

    def ring_pass(self, block: torch.Tensor, next_rank: int, prev_rank: int) -> torch.Tensor:
        """Send ``block`` to the next ring rank and receive the previous rank's equal-shape block.

        Nothing is recorded here: the ring's caller records the K/V volume it assembled.
        """
        raw_out = _as_bytes(block)
        raw_in = torch.empty_like(raw_out)
        requests = [dist.isend(raw_out, dst=next_rank), dist.irecv(raw_in, src=prev_rank)]
        for request in requests:
            request.wait()
        return raw_in.view(block.dtype).view(block.shape)

    def record(self, name: str, size: int) -> None:
        """Record a collective that the caller ran as several point-to-point steps (a ring)."""
        self._record(name, size)

    def summary(self) -> dict[str, dict[str, dict[str, int]]]:
        """Recorded traffic by phase and op name (setup runs left out)."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (phase, name), entry in self.traffic.items():
            if phase == SETUP:
                continue
            out.setdefault(phase, {})[name] = {
                "size": entry.size, "sent": entry.sent, "received": entry.received, "calls": entry.calls,
            }
        return out


def _as_bytes(x: torch.Tensor) -> torch.Tensor:
    """A contiguous uint8 view of ``x``, so that gloo moves any dtype unchanged."""
    flat = x.contiguous().reshape(-1)
    return flat.view(torch.uint8)
