"""The Ray executor: chunks run on Ray actors that each load one engine, the standard pattern for vLLM batch
inference (an actor class loads the model once in ``__init__`` and processes one batch per call).

The driver (the process that called ``orchestra run`` or ``Pipeline.run``) keeps every write: actors return a
chunk's added columns and the driver commits them to the job directory exactly as the local executor does,
so a job started on Ray may be resumed locally and the other way round.

The response cache is one SQLite file owned by one process: a ``CacheServer`` actor pinned to the driver's
node (no CPU reserved). Engine actors look up and store responses through it in one call per engine batch,
so actors on other nodes need no shared file system and the file never has two writers. ``ray`` is imported
only when this executor runs (``pip install 'orchestra[ray]'``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.executors import ChunkDone, EngineRecipe, Executor, LazyEngine
from orchestra.pipeline import added_columns
from orchestra.steps.base import Context, Step

logger = logging.getLogger(__name__)

CPUS_PER_ACTOR = 4  # torch's CPU kernels gain little beyond a few threads for the small default model
ACTOR_START_TIMEOUT_S = 900.0  # loading the model on a busy node is slow; an infeasible actor never starts
IN_FLIGHT_PER_ACTOR = 2  # one chunk running, one queued: actors never wait for the driver
OWN_PACKAGES = ("orchestra", "engine", "labelmodel", "prompting", "sampling")


def import_ray() -> Any:
    """``import ray``, or an error that says how to install it."""
    try:
        import ray
    except ImportError as err:
        raise OrchestraError(
            f"the Ray executor needs ray ({err}); install it with pip install 'orchestra[ray]', or use --executor local"
        ) from None
    return ray


class CacheServer:
    """The response cache's only writer: an actor on the driver's node that serves lookups and stores."""

    def __init__(self, path: str) -> None:
        from engine.cache import ResponseCache

        self.cache = ResponseCache(path)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.cache.get_many(keys)

    def put_many(self, kind: str, items: list[tuple[str, Any]]) -> None:
        self.cache.put_many(kind, items)


class RemoteCache:
    """A :class:`~engine.cache.ResponseCache` look-alike that forwards to a :class:`CacheServer` actor."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        import ray

        return ray.get(self.server.get_many.remote(list(keys)))

    def put_many(self, kind: str, items: Iterable[tuple[str, Any]]) -> None:
        import ray

        ray.get(self.server.put_many.remote(kind, list(items)))


class ChunkWorker:
    """A Ray actor: loads the engine once, then runs the row-wise steps on one chunk per call."""

    def __init__(self, steps: list[Step], context: Context, recipe: EngineRecipe | None, cache_server: Any,
                 threads: int) -> None:
        self.steps = steps
        self.engine = None
        if recipe is not None:
            self.engine = recipe.build(RemoteCache(cache_server) if cache_server is not None else None)
            import torch

            torch.set_num_threads(max(1, threads))  # engine.LLM takes every core of the node; share them
        self.context = dataclasses.replace(context, engine=self.engine, artifacts={})

    def ready(self) -> bool:
        return True

    def run(self, index: int, batch: pd.DataFrame) -> tuple[int, pd.DataFrame, dict[str, int]]:
        before = self.stats()
        added = added_columns(self.steps, batch, self.context)
        after = self.stats()
        return index, added, {k: after[k] - before.get(k, 0) for k in after}

    def stats(self) -> dict[str, int]:
        return dict(self.engine.stats()) if hasattr(self.engine, "hits") else {}


def register_user_modules(steps: Sequence[Step]) -> None:
    """Ship user step classes (plugins) by value, so actors need not import their modules.

    LF modules travel inside the ``lfs`` step's own pickle (their source), see ``LabelingFunctions.__getstate__``.
    """
    ray = import_ray()
    for name in sorted({type(step).__module__ for step in steps}):
        module = sys.modules.get(name)
        if module is not None and name.split(".")[0] not in OWN_PACKAGES and name != "__main__":
            ray.cloudpickle.register_pickle_by_value(module)


class RayExecutor(Executor):
    """Chunks on Ray actors, one engine each; results come back to the driver, which commits them.

    Parameters
    ----------
    engine
        How each actor builds its engine (with the response cache's path); None when no step calls a model.
    address
        Cluster address for ``ray.init`` (default: the running Ray instance if this process started one,
        else a new local instance).
    num_actors
        Actors (default: each node's CPUs // ``CPUS_PER_ACTOR`` summed over nodes, at least 1).
    cpus_per_actor
        CPUs reserved per actor, also its torch thread count (default: the cluster's CPUs // actors, at most
        one node's CPUs: an actor never spans nodes).
    gpus_per_actor
        GPUs reserved per actor (Ray then sets each actor's ``CUDA_VISIBLE_DEVICES``, so ``device="cuda"`` is
        the actor's own GPU). Default: 1 when the engine recipe's ``device`` is ``"cuda"``/``"cuda:N"``, or
        ``"auto"`` (the default) on a cluster with GPUs; else 0. With GPUs, the default actor count is the
        cluster's GPUs // ``gpus_per_actor``.
    init_kwargs
        Extra ``ray.init`` arguments when this executor starts Ray (e.g. ``object_store_memory``).
    """

    name = "ray"

    def __init__(self, engine: EngineRecipe | None = None, address: str | None = None,
                 num_actors: int | None = None, cpus_per_actor: int | None = None,
                 gpus_per_actor: float | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        if num_actors is not None and (not isinstance(num_actors, int) or num_actors < 1):
            raise OrchestraError(f"num_actors must be a whole number >= 1, got {num_actors!r}")
        if cpus_per_actor is not None and (not isinstance(cpus_per_actor, int) or cpus_per_actor < 1):
            raise OrchestraError(f"cpus_per_actor must be a whole number >= 1, got {cpus_per_actor!r}")
        if gpus_per_actor is not None and (isinstance(gpus_per_actor, bool)
                                           or not isinstance(gpus_per_actor, int | float) or gpus_per_actor < 0):
            raise OrchestraError(f"gpus_per_actor must be a number >= 0, got {gpus_per_actor!r}")
        import_ray()  # fail before anything is written when ray is not installed
        self.recipe = engine
        self.address = address
        self.num_actors = num_actors
        self.cpus_per_actor = cpus_per_actor
        self.gpus_per_actor = gpus_per_actor
        self.init_kwargs = dict(init_kwargs or {})
        self.totals = LazyEngine(engine)
        self._started_ray = False
        self._actors: list[Any] = []
        self._cache_server: Any = None

    def engine_for_driver(self, context: Context) -> Any:
        return self.totals

    def start(self) -> None:
        self._connect()

    def _connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
                      **self.init_kwargs}
            try:
                ray.init(address=self.address, **kwargs)
            except ConnectionError as err:
                raise OrchestraError(f"cannot reach the Ray cluster at {self.address!r}: {err}; start it with "
                                     "ray start --head, or leave out --address to run a local one") from err
            self._started_ray = True
        return ray

    def _gpus(self, ray: Any, needs_engine: bool) -> tuple[float, list[float]]:
        """GPUs per actor and each live node's GPUs; a CUDA engine on a cluster without GPUs is an error."""
        node_gpus = [float(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
        device = str((self.recipe.options if self.recipe else {}).get("device", "auto")) if needs_engine else "cpu"
        per_actor = self.gpus_per_actor
        if per_actor is None:
            on_cuda = device.startswith("cuda") or (device == "auto" and sum(node_gpus) > 0)
            per_actor = 1.0 if needs_engine and on_cuda else 0.0
        if per_actor > 0 and per_actor > max(node_gpus, default=0.0):
            raise OrchestraError(
                f"each Ray actor needs {per_actor:g} GPU(s) for the engine (device={device!r}), but the largest "
                f"Ray node has {max(node_gpus, default=0.0):g}; start the cluster on GPU nodes, or run the engine "
                "on the CPU (engine option device: cpu)"
            )
        return per_actor, node_gpus

    def _sizes(self, ray: Any, gpus: float = 0.0, node_gpus: Sequence[float] = ()) -> tuple[int, int]:
        """(actors, CPUs per actor): an actor lives on one node, so it never asks for more than a node has;
        with ``gpus`` per actor, the default count is what the nodes' GPUs hold."""
        nodes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        nodes = [c for c in nodes if c > 0] or [1]
        if self.num_actors is not None:
            actors = self.num_actors
            per_actor = self.cpus_per_actor or max(1, min(sum(nodes) // actors, max(nodes)))
        else:
            per_actor = self.cpus_per_actor or min(CPUS_PER_ACTOR, max(nodes))
            actors = max(1, sum(c // per_actor for c in nodes))
            if gpus > 0:
                actors = max(1, min(actors, sum(int(g // gpus) for g in node_gpus)))
        room = sum(c // per_actor for c in nodes)
        if per_actor > max(nodes):
            raise OrchestraError(f"cpus_per_actor={per_actor} but the largest Ray node has {max(nodes)} CPUs; "
                                 "ask for fewer CPUs per actor")
        if actors > room:
            logger.warning("%d actors x %d CPUs do not fit the cluster's nodes %s at once: some actors wait",
                           actors, per_actor, nodes)
        return actors, per_actor

    def _start_actors(self, ray: Any, steps: Sequence[Step], context: Context) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        needs_engine = any(step.needs_engine for step in steps)
        recipe = self.recipe if needs_engine else None
        if needs_engine and recipe is None:
            raise OrchestraError("the Ray executor builds one engine per actor: give it engine=EngineRecipe(...) "
                                 "(backend, model, options, cache) rather than a loaded LLM")
        gpus, node_gpus = self._gpus(ray, needs_engine)
        if recipe is not None and recipe.cache is not None:
            here = ray.get_runtime_context().get_node_id()
            server = ray.remote(CacheServer).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))
            self._cache_server = server.remote(str(recipe.cache))
        actors, per_actor = self._sizes(ray, gpus, node_gpus)
        register_user_modules(steps)
        worker = ray.remote(ChunkWorker).options(num_cpus=per_actor, num_gpus=gpus)
        shared = dataclasses.replace(context, engine=None, artifacts={})
        self._actors = [worker.remote(list(steps), shared, recipe, self._cache_server, per_actor)
                        for _ in range(actors)]
        try:
            ray.get([a.ready.remote() for a in self._actors], timeout=ACTOR_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(f"{actors} Ray actors of {per_actor} CPUs did not start within "
                               f"{ACTOR_START_TIMEOUT_S:.0f} s; check the cluster's free CPUs (ray status) or pass "
                               "fewer --num-actors") from None
        logger.info("ray: %d actors x %d CPUs%s%s", actors, per_actor, f" + {gpus:g} GPU" if gpus else "",
                    " with one engine each" if recipe else "")

    def run_chunks(self, steps: Sequence[Step], indices: Sequence[int], batch: Callable[[int], pd.DataFrame],
                   context: Context, on_done: ChunkDone) -> None:
        if not indices:
            return
        ray = self._connect()
        self._start_actors(ray, steps, context)
        todo = list(indices)
        in_flight: dict[Any, Any] = {}

        def submit(actor: Any) -> None:
            index = todo.pop(0)
            in_flight[actor.run.remote(index, batch(index))] = actor

        for _ in range(IN_FLIGHT_PER_ACTOR):
            for actor in self._actors:
                if todo:
                    submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            actor = in_flight.pop(ready[0])
            index, added, delta = ray.get(ready[0])
            self.totals.add(delta)
            on_done(index, added)
            if todo:
                submit(actor)

    def close(self) -> None:
        if not self._actors and self._cache_server is None and not self._started_ray:
            return
        ray = import_ray()
        for actor in [*self._actors, *([self._cache_server] if self._cache_server is not None else [])]:
            ray.kill(actor)
        self._actors, self._cache_server = [], None
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
