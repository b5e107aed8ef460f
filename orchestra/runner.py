"""``run_file``: the Python API of ``orchestra run`` (a YAML pipeline as a resumable batch job)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from orchestra.errors import OrchestraError
from orchestra.executors import EngineRecipe, Executor, LazyEngine, make_executor
from orchestra.job import Job, JobResult
from orchestra.steps.base import Context

logger = logging.getLogger(__name__)


def default_job_dir(output: Path) -> Path:
    """``OUTPUT.job`` beside the output."""
    return output.with_name(output.name + ".job")


def check_model(backend: str, model: str) -> None:
    """Refuse a model the local backend cannot find before a job writes anything (no weights are loaded)."""
    if backend != "local":
        return
    from engine.errors import EngineError
    from engine.loader import resolve_model_path

    try:
        resolve_model_path(model)
    except EngineError as err:
        raise OrchestraError(f"engine.model: {err}") from None


def run_file(
    path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    job_dir: str | Path | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    num_actors: int | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JobResult:
    """Run (or resume) a YAML pipeline as a batch job, exactly as ``orchestra run`` does.

    Parameters
    ----------
    path
        The pipeline .yaml.
    overrides
        ``key.path=value`` strings (``--set``).
    job_dir
        Job directory (default: ``OUTPUT.job`` beside the output).
    executor
        ``"local"`` or ``"ray"`` (or an :class:`~orchestra.executors.Executor`).
    address
        Ray cluster address (``--address``); default: a local Ray instance.
    num_actors
        Ray actors, one engine each (default: the cluster's CPUs in shares of a few).
    limit
        Process only the first ``limit`` records.
    progress
        Called with (rows done, rows total) as chunks commit; an object with ``bind(engine, name)`` gets the
        engine (for tokens/s and cache hits) and the pipeline's name first.

    Returns
    -------
    JobResult
    """
    from orchestra.build import prepare

    if limit is not None and limit < 1:
        raise OrchestraError(f"--limit must be at least 1, got {limit}")
    prepared = prepare(path, list(overrides), limit=limit)
    job = Job(prepared, Path(job_dir) if job_dir else default_job_dir(prepared.output_path))
    job.check_dir()
    recipe = None
    if prepared.pipeline.needs_engine:
        spec = prepared.config.engine
        check_model(spec.backend, spec.model)
        recipe = EngineRecipe(spec.backend, spec.model, dict(spec.options),
                              prepared.cache_path or job.job_dir / "cache.sqlite")
    runner = make_executor(executor, engine=recipe, address=address, num_actors=num_actors)
    try:
        engine = LazyEngine(recipe) if recipe is not None and runner.name == "local" else None
        context = Context(task=prepared.task, engine=engine, seed=prepared.config.run.seed,
                          base_dir=str(prepared.source.resolve().parent))
        if hasattr(progress, "bind"):
            progress.bind(runner.engine_for_driver(context), prepared.config.name)
        result = job.run(context, progress, runner)
    finally:
        runner.close()
    if recipe is not None and recipe.cache is not None and result.cache:
        from engine.cache import ResponseCache

        cache = ResponseCache(recipe.cache)
        try:
            result.cache = {**result.cache, "entries": len(cache)}
        finally:
            cache.close()
    return result
