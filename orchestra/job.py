"""Batch jobs that lose nothing: chunks committed as Parquet shards plus a manifest, resumable after a kill.

Job directory::

    manifest.json          what the job is (fingerprint of data, task, steps, seed, chunk size) and which
                           chunks are committed; replaced atomically (write temp file, fsync, rename)
    shards/chunk-NNNNNN.parquet
                           the columns the row-wise steps added for one chunk (plus ``_row``); written to a
                           temp file and renamed before the manifest names it
    result.parquet         the final table, summary.json, report.html
    cache.sqlite           the response cache, unless the YAML puts it elsewhere

A chunk counts as done only once the manifest lists it, so a kill between the shard rename and the manifest
rename leaves an orphan shard that the re-run overwrites. Steps that need all rows (the label model) run once
every chunk is committed, on all rows, which is deterministic given the seed; the output is written to a temp
file and renamed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from orchestra.build import Prepared
from orchestra.errors import OrchestraError
from orchestra.executors import Executor, LocalExecutor
from orchestra.io import remove_stale_temps, write_table
from orchestra.steps.base import Context

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
VERSION = 1


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temp file beside ``path``, fsync, rename."""
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def job_spec(prepared: Prepared, rows: int) -> dict[str, Any]:
    """Everything that decides a job's output: it must match for a job directory to be resumed."""
    config = prepared.config
    engine = config.engine.model_dump(exclude={"cache"}) if config.engine is not None else None
    return {
        "data_sha256": file_sha256(prepared.data_path),
        "rows": rows,
        "data": config.data.model_dump(exclude={"path"}),
        "task": prepared.task.to_dict() if prepared.task is not None else None,
        "steps": [{"type": s.step_type, "name": s.name, "params": s.params(), **s.fingerprint_extra()}
                  for s in prepared.pipeline.steps],
        "engine": engine if prepared.pipeline.needs_engine else None,
        "plugins_sha256": [file_sha256(p) for p in prepared.plugins],
        "chunk_size": config.run.chunk_size,
        "seed": config.run.seed,
    }


def fingerprint(spec: dict[str, Any]) -> str:
    """SHA-256 of a job spec."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def is_running(job_dir: str | Path) -> bool:
    """Whether an ``orchestra run`` holds the job directory's lock right now."""
    lock = Path(job_dir) / "lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def read_manifest(job_dir: str | Path) -> dict[str, Any]:
    """The manifest of a job directory.

    Parameters
    ----------
    job_dir
        The job directory.

    Returns
    -------
    dict
    """
    path = Path(job_dir) / MANIFEST
    if not path.is_file():
        raise OrchestraError(f"{job_dir} is not a job directory (no {MANIFEST}); give the --job-dir of a run")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise OrchestraError(f"cannot read {path}: {err}") from err


@dataclass
class JobResult:
    """What a finished job produced."""

    job_dir: Path
    output: Path
    frame: pd.DataFrame
    summary: dict[str, Any]
    chunks_run: int
    chunks_resumed: int
    cache: dict[str, int] = field(default_factory=dict)


class Job:
    """A pipeline run over a data set in chunks, committed to a job directory.

    Parameters
    ----------
    prepared
        The pipeline, task and data (from :func:`orchestra.build.prepare`).
    job_dir
        The job directory (created if missing).
    """

    def __init__(self, prepared: Prepared, job_dir: str | Path) -> None:
        if prepared.frame is None:
            raise OrchestraError("the job needs its data read; prepare the pipeline with read_data=True")
        self.prepared = prepared
        self.job_dir = Path(job_dir)
        self.frame = prepared.frame.reset_index(drop=True)
        self.chunk_size = prepared.config.run.chunk_size
        self.n_chunks = -(-len(self.frame) // self.chunk_size)
        self.spec = job_spec(prepared, len(self.frame))
        self.fingerprint = fingerprint(self.spec)
        self._lock_handle: Any = None

    def check_dir(self) -> dict[str, Any] | None:
        """The existing manifest if the directory holds this same job; refuse a different one."""
        if not self.job_dir.exists():
            return None
        if not self.job_dir.is_dir():
            raise OrchestraError(f"job directory {self.job_dir} is a file; give a folder with --job-dir")
        if not (self.job_dir / MANIFEST).exists():
            # The response cache (with SQLite's -wal / -shm files) is opened before the first manifest.
            if any(not p.name.startswith("cache.sqlite") for p in self.job_dir.iterdir()):
                raise OrchestraError(
                    f"{self.job_dir} exists, is not empty and is not a job directory; give a new --job-dir"
                )
            return None
        manifest = read_manifest(self.job_dir)
        if manifest.get("fingerprint") != self.fingerprint:
            old = manifest.get("spec", {})
            changed = sorted(k for k in set(old) | set(self.spec) if old.get(k) != self.spec.get(k))
            raise OrchestraError(
                f"{self.job_dir} holds a different job (changed: {', '.join(changed) or 'format'}); results are "
                "never mixed: use a new --job-dir, or delete that folder to start over"
            )
        return manifest

    def _lock(self) -> None:
        self._lock_handle = open(self.job_dir / "lock", "a+")  # noqa: SIM115 - held for the job's lifetime
        try:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise OrchestraError(f"another orchestra run is using {self.job_dir}; wait for it or stop it") from None

    def _unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle.fileno(), fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def _shard(self, index: int) -> Path:
        return self.job_dir / "shards" / f"chunk-{index:06d}.parquet"

    def run(self, context: Context, progress: Callable[[int, int], None] | None = None,
            executor: Executor | None = None) -> JobResult:
        """Run (or resume) the job and write its outputs.

        Parameters
        ----------
        context
            Task, engine (already behind the cache), seed.
        progress
            Called with (rows done, rows total) at the start and after each chunk.
        executor
            Where the chunks run (default: :class:`~orchestra.executors.LocalExecutor`). Whatever runs them,
            this process commits every chunk, so the job directory has one writer.

        Returns
        -------
        JobResult
        """
        manifest = self.check_dir()
        executor = executor or LocalExecutor()
        executor.start()
        (self.job_dir / "shards").mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            return self._run(manifest, context, progress, executor)
        finally:
            self._unlock()

    def _run(self, manifest: dict[str, Any] | None, context: Context,
             progress: Callable[[int, int], None] | None, executor: Executor) -> JobResult:
        if manifest is None:
            manifest = {"version": VERSION, "name": self.prepared.config.name, "fingerprint": self.fingerprint,
                        "spec": self.spec, "chunks": self.n_chunks, "chunk_size": self.chunk_size,
                        "rows": len(self.frame), "done": {}, "state": "running", "created": time.time()}
            write_json_atomic(self.job_dir / MANIFEST, manifest)
        done: dict[str, Any] = manifest["done"]
        rowwise, whole = self.prepared.pipeline.split()
        pipeline = self.prepared.pipeline
        resumed = len(done)
        rows_done = sum(entry["rows"] for entry in done.values())
        if resumed:
            logger.info("resuming %s: %d of %d chunks already committed", self.job_dir, resumed, self.n_chunks)
        if progress is not None:
            progress(rows_done, len(self.frame))

        def batch(index: int) -> pd.DataFrame:
            return self.frame.iloc[index * self.chunk_size:(index + 1) * self.chunk_size]

        def commit(index: int, added: pd.DataFrame) -> None:
            nonlocal rows_done
            start = index * self.chunk_size
            added = added.reset_index(drop=True)
            added.insert(0, "_row", range(start, start + len(added)))
            write_table(added, self._shard(index))
            done[str(index)] = {"rows": len(added), "file": self._shard(index).name}
            manifest["updated"] = time.time()
            write_json_atomic(self.job_dir / MANIFEST, manifest)
            rows_done += len(added)
            logger.debug("chunk %d/%d committed (%d rows)", index + 1, self.n_chunks, len(added))
            if progress is not None:
                progress(rows_done, len(self.frame))

        todo = [i for i in range(self.n_chunks) if str(i) not in done]
        executor.run_chunks(rowwise, todo, batch, context, commit)
        context = dataclasses.replace(context, engine=executor.engine_for_driver(context))
        frame = self.assemble()
        frame = pipeline.run_steps(whole, frame, context)
        output = write_table(frame, self.prepared.output_path)
        write_table(frame, self.job_dir / "result.parquet")
        from orchestra.report import build_summary, job_meta, write_report

        meta = job_meta(self.prepared, context)
        summary = build_summary(frame, meta)
        write_json_atomic(self.job_dir / "meta.json", meta)
        write_report(summary, self.job_dir, self.prepared.report_path)
        manifest["state"] = "done"
        manifest["output"] = str(output)
        manifest["finished"] = time.time()
        write_json_atomic(self.job_dir / MANIFEST, manifest)
        stats = context.engine.stats() if hasattr(context.engine, "stats") else {}
        return JobResult(self.job_dir, output, frame, summary, self.n_chunks - resumed, resumed, stats)

    def assemble(self) -> pd.DataFrame:
        """The input rows joined with every committed shard, in row order; checks no row is lost or doubled."""
        parts = [pd.read_parquet(self._shard(i)) for i in range(self.n_chunks)]
        added = pd.concat(parts, ignore_index=True)
        rows = added.pop("_row").to_numpy()
        if len(rows) != len(self.frame) or (rows != range(len(self.frame))).any():
            raise RuntimeError(f"job {self.job_dir}: the shards do not cover rows 0..{len(self.frame) - 1} once each")
        return pd.concat([self.frame, added], axis=1)
