"""Which replica a job goes to (:class:`CheckpointRouter`, the Worker deployment's Serve request router).

Serve's default router sends a request for a checkpoint that no replica holds to a random replica among those
holding the fewest models — with every replica full, a coin flip that may evict the checkpoint used a moment
ago while another replica holds one nobody has asked for in an hour. A load costs seconds (SDXL: ~8 s here), so
this router decides as a user would:

1. a replica that holds the checkpoint, or is loading it (Serve learns what a replica holds only after the
   load, so requests arriving meanwhile would otherwise start a second load elsewhere; "loading" counts from
   the moment the replica accepted the job, so requests routed within the same few milliseconds may still
   each load it);
2. else, when those are busy or there are none, a replica with a free model slot;
3. else the replica whose least recently used checkpoint (the one it would evict) was used longest ago,
   across the cluster.

Within a rank the replica with the shortest queue wins; a full replica is passed over (Serve's queue
probing). The choice of ranks is :func:`rank_replicas`, a pure function.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ray.serve.request_router import (
    FIFOMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

LOADED_GRACE_S = 10.0  # how long a finished job's checkpoint counts as held while Serve's report catches up
R = TypeVar("R")


def rank_replicas(replicas: Iterable[R], checkpoint: str, holds: Callable[[R], set[str]],
                  last_used: Callable[[R, str], float], capacity: int) -> list[list[R]]:
    """``replicas`` in the order to try them for a job on ``checkpoint``: those holding it; then those with fewer
    than ``capacity`` checkpoints; then the rest, the one whose least recently used checkpoint (by ``last_used``,
    seconds on any one clock; 0 = unknown, i.e. oldest) is oldest first. Equal replicas share a rank."""
    holders, free, full = [], [], []
    for replica in replicas:
        held = holds(replica)
        if checkpoint in held:
            holders.append(replica)
        elif len(held) < capacity:
            free.append(replica)
        else:
            full.append((min((last_used(replica, name) for name in held), default=0.0), replica))
    ranks = [holders, free]
    full.sort(key=lambda pair: pair[0])
    previous = math.nan
    for evicted_at, replica in full:
        if evicted_at == previous:
            ranks[-1].append(replica)
        else:
            ranks.append([replica])
        previous = evicted_at
    return [rank for rank in ranks if rank]


class CheckpointRouter(FIFOMixin, MultiplexMixin, RequestRouter):
    """Routes each request by its ``multiplexed_model_id`` (the checkpoint) with :func:`rank_replicas`.
    ``request_router_kwargs``: ``models_per_replica``."""

    def initialize_state(self, models_per_replica: int = 1, **kwargs: Any) -> None:
        self.capacity = models_per_replica
        self.last_used: dict[tuple[ReplicaID, str], float] = {}
        # (replica, checkpoint) sent there but not yet reported held: until when to count it as held
        self.loading: dict[tuple[ReplicaID, str], float] = {}
        self.in_flight: dict[str, tuple[ReplicaID, str]] = {}  # internal request id -> (replica, checkpoint)

    def holds(self, replica: RunningReplica) -> set[str]:
        now = time.monotonic()
        pending = {name for (rid, name), until in self.loading.items() if rid == replica.replica_id and until > now}
        return set(replica.multiplexed_model_ids) | pending

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        checkpoint = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # sleep between rounds when all are full
        if not checkpoint:
            return [candidate_replicas]
        return rank_replicas(candidate_replicas, checkpoint, self.holds,
                             lambda r, name: self.last_used.get((r.replica_id, name), 0.0), self.capacity)

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        checkpoint = pending_request.metadata.multiplexed_model_id
        if not checkpoint:
            return
        key = (replica_id, checkpoint)
        self.last_used[key] = time.monotonic()
        replica = self.curr_replicas.get(replica_id)
        if replica is None or checkpoint not in replica.multiplexed_model_ids:
            self.loading[key] = math.inf
        self.in_flight[pending_request.metadata.internal_request_id] = key

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        key = self.in_flight.pop(internal_request_id, None)
        if key is not None and key in self.loading:
            self.loading[key] = time.monotonic() + LOADED_GRACE_S

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        reported = {r.replica_id: set(r.multiplexed_model_ids) for r in replicas}
        self.loading = _keep(self.loading, lambda rid, name: rid in reported and name not in reported[rid])
        self.last_used = _keep(self.last_used, lambda rid, name: rid in reported)
        self.in_flight = {request: key for request, key in self.in_flight.items() if key[0] in reported}


def _keep(table: Mapping[tuple[ReplicaID, str], float],
          wanted: Callable[[ReplicaID, str], bool]) -> dict[tuple[ReplicaID, str], float]:
    return {key: value for key, value in table.items() if wanted(*key)}
