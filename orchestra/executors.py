"""Executors: where the row-wise steps of each chunk run.

``LocalExecutor`` runs chunks one after another in this process, with the context's engine. ``RayExecutor``
(:mod:`orchestra.ray_executor`) sends them to Ray actors that each hold one engine. Either way the caller gets
every chunk's added columns back in this process through ``on_done`` and commits them itself, so the job
directory has one writer whatever runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestra.errors import OrchestraError
from orchestra.pipeline import added_columns
from orchestra.steps.base import Context, Step

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
ChunkDone = Callable[[int, pd.DataFrame], None]


@dataclass
class EngineRecipe:
    """How to build an engine in another process: ``engine.LLM`` arguments and the response cache's path.

    Parameters
    ----------
    backend
        Engine backend (``"local"``).
    model
        Model name or local path.
    options
        Extra keyword arguments of ``engine.LLM``.
    cache
        SQLite response cache, or None for no cache.
    """

    backend: str = "local"
    model: str = "smollm2-135m"
    options: dict[str, Any] = field(default_factory=dict)
    cache: Path | None = None

    def build(self, cache: Any = None) -> Any:
        """Load the engine, behind ``cache`` (a store) or this recipe's cache file when there is one."""
        from orchestra.steps.prompt import load_engine

        llm = load_engine(self.backend, self.model, self.options)
        store = cache if cache is not None else self.cache
        if store is None:
            return llm
        from engine.cache import CachedEngine

        return CachedEngine(llm, store, backend=self.backend, model=self.model)


class LazyEngine:
    """Builds the engine from its recipe on the first request, and sums the cache counters of remote engines.

    Stands in for ``context.engine`` in the driver: a job whose chunks are all committed loads no model, and
    under Ray it counts the actors' hits, misses, calls and tokens (``add``) for progress and reports.
    """

    def __init__(self, recipe: EngineRecipe | None) -> None:
        self.recipe = recipe
        self.remote = {"hits": 0, "misses": 0, "calls": 0, "tokens": 0}
        self._engine: Any = None

    def add(self, delta: dict[str, int]) -> None:
        """Add a remote engine's counters."""
        for key, value in delta.items():
            self.remote[key] = self.remote.get(key, 0) + int(value)

    def engine(self) -> Any:
        """The local engine, built on first use."""
        if self._engine is None:
            if self.recipe is None:
                raise OrchestraError("a step asked for a model, but no engine is configured; add an engine section")
            self._engine = self.recipe.build()
        return self._engine

    def score(self, prompts: Any, choices: Any) -> Any:
        return self.engine().score(prompts, choices)

    def generate(self, prompts: Any, sampling_params: Any = None) -> Any:
        return self.engine().generate(prompts, sampling_params)

    def stats(self) -> dict[str, int]:
        """Hits, misses, engine calls and tokens: the local engine's plus the remote ones'."""
        local = self._engine.stats() if hasattr(self._engine, "hits") else {}
        return {k: v + int(local.get(k, 0)) for k, v in self.remote.items()}

    @property
    def hits(self) -> int:
        return self.stats()["hits"]

    @property
    def tokens(self) -> int:
        return self.stats()["tokens"]


class Executor:
    """Runs the row-wise steps over chunks and hands each chunk's added columns to ``on_done``."""

    name = ""

    def run_chunks(self, steps: Sequence[Step], indices: Sequence[int], batch: Callable[[int], pd.DataFrame],
                   context: Context, on_done: ChunkDone) -> None:
        """Run ``steps`` on every chunk in ``indices``.

        Parameters
        ----------
        steps
            The row-wise steps.
        indices
            Chunks to run, in order.
        batch
            Chunk index -> its rows.
        context
            Task, engine, seed.
        on_done
            Called in this process with (chunk index, the columns the steps added, with the batch's index),
            in any order, once per chunk.
        """
        raise NotImplementedError

    def start(self) -> None:
        """Check the executor can run (connect to workers) before a job writes anything."""

    def engine_for_driver(self, context: Context) -> Any:
        """The engine the steps that run in this process (after every chunk) use; also counts cache hits."""
        return context.engine

    def close(self) -> None:
        """Release workers."""


class LocalExecutor(Executor):
    """Chunks one after another in this process."""

    name = "local"

    def run_chunks(self, steps: Sequence[Step], indices: Sequence[int], batch: Callable[[int], pd.DataFrame],
                   context: Context, on_done: ChunkDone) -> None:
        for index in indices:
            on_done(index, added_columns(steps, batch(index), context))


def make_executor(name: str | Executor = "local", engine: EngineRecipe | None = None, address: str | None = None,
                  num_actors: int | None = None) -> Executor:
    """An executor by name.

    Parameters
    ----------
    name
        ``"local"`` or ``"ray"`` (or an :class:`Executor`, returned as is).
    engine
        How each Ray actor builds its engine (None when no step calls a model).
    address
        Ray cluster address (default: start a local Ray instance, or use the one ``ray.init`` started).
    num_actors
        Ray actors (default: the cluster's CPUs divided among actors of a few CPUs each).

    Returns
    -------
    Executor
    """
    if isinstance(name, Executor):
        return name
    if name == "local":
        if address is not None or num_actors is not None:
            raise OrchestraError("--address and --num-actors go with --executor ray; drop them or add --executor ray")
        return LocalExecutor()
    if name == "ray":
        from orchestra.ray_executor import RayExecutor

        return RayExecutor(engine=engine, address=address, num_actors=num_actors)
    raise OrchestraError(f"executor must be one of {list(EXECUTORS)}, got {name!r}")
