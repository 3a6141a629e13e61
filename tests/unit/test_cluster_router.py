"""The cluster's replica ranking (retouch.cluster.router.rank_replicas): holders, then free model slots, then
the replica whose least recently used checkpoint is oldest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


class FakeReplica:
    """What the router reads of a replica: its id, the checkpoints Serve reports it holds, its queue."""

    max_ongoing_requests = 2
    is_cross_language = False

    def __init__(self, replica_id: str, held: set[str]):
        self.replica_id, self.multiplexed_model_ids = replica_id, held

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return 0


def request(checkpoint: str, request_id: str):
    from types import SimpleNamespace

    from ray.serve._private.request_router.common import RequestRoutingContext

    metadata = SimpleNamespace(multiplexed_model_id=checkpoint, internal_request_id=request_id)
    return SimpleNamespace(metadata=metadata, routing_context=RequestRoutingContext())


def test_the_router_counts_a_checkpoint_being_loaded_as_held_until_serve_reports_it():
    import asyncio

    from ray.serve._private.common import DeploymentHandleSource, DeploymentID

    async def scenario():
        router = CheckpointRouter(deployment_id=DeploymentID(name="Worker", app_name="t"),
                                  handle_source=DeploymentHandleSource.UNKNOWN)
        router.initialize_state(models_per_replica=1)
        a, b = FakeReplica("a", {"sd1"}), FakeReplica("b", {"inpaint"})
        router.update_replicas([a, b])
        ids = lambda ranks: [[r.replica_id for r in rank] for rank in ranks]  # noqa: E731
        router.on_request_routed(request("inpaint", "1"), "b", None)
        router.on_request_routed(request("sd1", "2"), "a", None)
        # sdxl: nobody holds it; a's sd1 was used more recently than b's inpaint, so b is evicted
        first = request("sdxl", "3")
        assert ids(await router.choose_replicas([a, b], first)) == [["b"], ["a"]]
        assert first.routing_context.should_backoff
        router.on_request_routed(first, "b", None)
        # while b loads sdxl (Serve still reports inpaint there), another sdxl job goes to b, not to a
        assert ids(await router.choose_replicas([a, b], request("sdxl", "4"))) == [["b"], ["a"]]
        router.on_request_completed("b", "3")
        assert ids(await router.choose_replicas([a, b], request("sdxl", "5")))[0] == ["b"]  # the report lags
        b = FakeReplica("b", {"sdxl"})
        router.update_replicas([a, b])  # Serve's report arrives
        assert router.loading == {}
        assert ids(await router.choose_replicas([a, b], request("inpaint", "6"))) == [["a"], ["b"]]
        router.update_replicas([a])  # b is gone: nothing about it is kept
        assert {key[0] for key in router.last_used} == {"a"}
        assert router.in_flight == {"2": ("a", "sd1")}  # b's unfinished request "1" is dropped with b

    # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, scenario()).result()
