"""The cluster's replica ranking (retouch.cluster.router.rank_replicas): holders, then free model slots, then
the replica whose least recently used checkpoint is oldest."""

from __future__ import annotations

import pytest

pytest.importorskip("ray.serve")

from retouch.cluster import ClusterOptions  # noqa: E402
from retouch.cluster.router import CheckpointRouter, rank_replicas  # noqa: E402

HELD = {"a": {"sd1"}, "b": {"inpaint"}, "c": set(), "d": {"sdxl", "sd2"}}
USED = {("a", "sd1"): 30.0, ("b", "inpaint"): 10.0, ("d", "sdxl"): 50.0, ("d", "sd2"): 5.0}


def ranks(checkpoint: str, replicas=HELD, capacity: int = 1, used=USED) -> list[list[str]]:
    return rank_replicas(replicas, checkpoint, lambda r: replicas[r], lambda r, n: used.get((r, n), 0.0), capacity)


def test_a_replica_holding_the_checkpoint_comes_first():
    assert ranks("sd1")[0] == ["a"]
    assert ranks("sd2")[0] == ["d"]


def test_then_a_replica_with_a_free_slot():
    assert ranks("sd1") == [["a"], ["c"], ["d"], ["b"]]  # c is empty; d, b full (capacity 1)


def test_full_replicas_in_order_of_their_least_recently_used_checkpoint():
    # d would evict sd2 (used at 5), b inpaint (10); a sd1 (30)
    assert ranks("sd15", {k: v for k, v in HELD.items() if v}) == [["d"], ["b"], ["a"]]


def test_capacity_counts_how_many_a_replica_may_hold():
    # with two slots, a and b still have room; d (two held) is full
    assert ranks("other", capacity=2) == [["a", "b", "c"], ["d"]]


def test_a_checkpoint_of_unknown_age_is_evicted_first_and_ties_share_a_rank():
    held = {"a": {"x"}, "b": {"y"}, "c": {"z"}}
    assert ranks("new", held, used={("c", "z"): 1.0}) == [["a", "b"], ["c"]]


def test_the_deployment_uses_this_router():
    config = ClusterOptions(models_per_replica=3).deployment_options()["request_router_config"]
    assert config == {"request_router_class": f"{CheckpointRouter.__module__}:{CheckpointRouter.__name__}",
                      "request_router_kwargs": {"models_per_replica": 3}}
