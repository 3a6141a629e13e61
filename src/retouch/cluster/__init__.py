"""The A1111 API (and the web page) over a Ray Serve cluster (optional extra ``retouch[cluster]``).

* ``retouch cluster --ckpt-dir DIR …`` starts (or joins, ``--address``) Ray, deploys the
  :class:`~retouch.cluster.worker.Worker` replicas and serves :func:`retouch.server.app.create_app` over a
  :class:`~retouch.cluster.backend.RayBackend` from this process;
* ``serve run retouch.cluster:app ckpt_dir=DIR …`` (or a Serve config file naming ``retouch.cluster:app``)
  deploys the same thing the Ray way, the HTTP app as a Serve ingress deployment.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

APP_NAME = "retouch"
NAMESPACE = "retouch"


@dataclass(frozen=True)
class ClusterOptions:
    """How the job replicas are deployed."""

    min_replicas: int = 1
    max_replicas: int = 1
    models_per_replica: int = 1
    max_queue: int = 16  # requests waiting for a replica, beyond those the replicas hold, before 503s
    per_replica_queue: int = 1  # jobs a busy replica accepts behind its running one (checkpoint affinity)
    threads_per_replica: int = 1
    gpus_per_replica: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low = 0 if f.name in ("per_replica_queue", "gpus_per_replica", "max_queue") else 1
            if not isinstance(value, int | float) or value < low:
                raise ValueError(f"{f.name}: must be a number ≥ {low}, got {value!r}")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})")

    def deployment_options(self) -> dict[str, Any]:
        scaling: dict[str, Any]
        if self.min_replicas == self.max_replicas:
            scaling = {"num_replicas": self.min_replicas}
        else:  # scaled by queue length: about one running job per replica
            scaling = {"autoscaling_config": {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                              "target_ongoing_requests": 1, "upscale_delay_s": 5,
                                              "downscale_delay_s": 120}}
        actor: dict[str, Any] = {"num_cpus": self.threads_per_replica}
        if self.gpus_per_replica:
            actor["num_gpus"] = self.gpus_per_replica
        router = {"request_router_class": "retouch.cluster.router:CheckpointRouter",
                  "request_router_kwargs": {"models_per_replica": self.models_per_replica}}
        return {**scaling, "max_ongoing_requests": 1 + self.per_replica_queue, "max_queued_requests": self.max_queue,
                "ray_actor_options": actor, "health_check_period_s": 2, "health_check_timeout_s": 30,
                "graceful_shutdown_timeout_s": 5, "request_router_config": router}


def worker_app(catalogue: dict[str, Any], options: ClusterOptions, registry: Any):
    """The Worker deployment, bound (an application of its own, or a part of the ingress application)."""
    from ray import serve

    from retouch.cluster.worker import worker_class

    deployment = serve.deployment(name="Worker", **options.deployment_options())(
        worker_class(options.models_per_replica))
    return deployment.bind(catalogue, registry, options.models_per_replica, options.threads_per_replica)


def catalogue_of(config) -> dict[str, Any]:
    """What a replica needs to find and load checkpoints, from a :class:`~retouch.serving.state.ServerConfig`."""
    from retouch.serving.models import manager_settings

    return manager_settings(config)


def add_cluster_route(api, backend) -> None:
    """``GET /internal/cluster``: the running tasks with their replicas, the queue, and every model load."""

    @api.get("/internal/cluster")
    def cluster_state() -> dict[str, Any]:
        return backend.cluster()


def app(args: dict[str, Any]):
    """Serve application builder: ``serve run retouch.cluster:app ckpt_dir=DIR [ckpt=NAME] [min_replicas=N]
    [max_replicas=M] [models_per_replica=K] [max_queue=Q]``."""
    from retouch.cluster.ingress import build_application

    return build_application(args)
