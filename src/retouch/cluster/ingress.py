"""Running the HTTP app for a cluster: from the ``retouch cluster`` process (:func:`start`), or as a Serve
ingress deployment (:func:`build_application`, for ``serve run retouch.cluster:app``)."""

from __future__ import annotations

from typing import Any

from ray import serve

from retouch.cluster import APP_NAME, NAMESPACE, ClusterOptions, add_cluster_route, catalogue_of, worker_app
from retouch.cluster.backend import RayBackend
from retouch.cluster.registry import registry_actor
from retouch.server.app import create_app
from retouch.serving.models import ModelManager, manager_settings
from retouch.serving.state import ServerConfig


def make_app(config: ServerConfig, handle: Any, registry: Any):
    """The API app over the Worker deployment behind ``handle``."""
    backend = RayBackend(handle, registry, ModelManager(**manager_settings(config)))
    api = create_app(backend, config)
    add_cluster_route(api, backend)
    return api


def start(config: ServerConfig, options: ClusterOptions, address: str | None) -> tuple[Any, Any]:
    """Connect to (or start) Ray, deploy the workers; the HTTP app and a function that tears it all down."""
    import ray

    # a wrong --ckpt/--ckpt-dir/--vae-dir fails here, not in Ray
    ModelManager(**manager_settings(config))
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"location": "NoServer"})
    registry = registry_actor(f"{APP_NAME}-registry", NAMESPACE)
    handle = serve.run(worker_app(catalogue_of(config), options, registry), name=APP_NAME, route_prefix=None)

    def stop() -> None:
        try:
            serve.delete(APP_NAME)
            ray.kill(registry)
        finally:
            if started_ray:
                serve.shutdown()
                ray.shutdown()

    return make_app(config, handle, registry), stop


def build_application(args: dict[str, Any]):
    """The Serve application (ingress + workers) for ``serve run retouch.cluster:app``."""
    from dataclasses import fields

    option_names = {f.name for f in fields(ClusterOptions)}
    values: dict[str, Any] = {k: int(v) if k != "gpus_per_replica" else float(v)
                              for k, v in args.items() if k in option_names}
    options = ClusterOptions(**values)
    config = ServerConfig(ckpt=args.get("ckpt"), ckpt_dir=args.get("ckpt_dir"), vae_dir=args.get("vae_dir"),
                          vae_path=args.get("vae_path"), lora_dir=args.get("lora_dir"),
                          embeddings_dir=args.get("embeddings_dir"))
    registry_name = f"{args.get('name', APP_NAME)}-registry"

    @serve.deployment(name="Ingress", max_ongoing_requests=1000)
    @serve.ingress()
    class Ingress:
        def __init__(self, workers: Any):
            self.workers = workers

        def __serve_build_asgi_app__(self):  # Serve asks for the app once the replica has its handle
            return make_app(config, self.workers, registry_actor(registry_name, NAMESPACE))

    registry = registry_actor(registry_name, NAMESPACE)
    return Ingress.bind(worker_app(catalogue_of(config), options, registry))  # type: ignore[attr-defined]
