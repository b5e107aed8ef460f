"""Appliers: run labeling functions over records and collect the label matrix L (n x m, -1 = abstain).

``LFApplier`` takes any iterable of records (dicts, namedtuples, objects); ``PandasLFApplier`` takes a
DataFrame. Both run serially or over row chunks in worker processes, and are fault tolerant by default: an LF
that raises abstains on that row and the fault is counted in ``fault_counts_``.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pandas as pd

from labelmodel.errors import LabelModelError
from labelmodel.lf import ABSTAIN, LabelingFunction, as_record, check_vote

logger = logging.getLogger(__name__)

_CHUNKS_PER_JOB = 4
_SERIAL_PROGRESS_CHUNK = 10_000


def compact_int_dtype(max_label: int) -> np.dtype:
    """Return the smallest signed int dtype holding ``-1..max_label`` (int8, int16, int32 or int64)."""
    for dtype in (np.int8, np.int16, np.int32):
        if max_label <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _where(start: int, i: int, labels: Sequence[Any] | None) -> str:
    row = start + i
    if labels is None:
        return f" on row {row}"
    return f" on row {row} (index label {labels[i]!r})"


def _apply_chunk(
    lfs: Sequence[LabelingFunction],
    records: Sequence[Any],
    start: int,
    fault_tolerant: bool,
    labels: Sequence[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply every LF to every record of one chunk; return (votes int64 n_c x m, fault counts per LF)."""
    out = np.empty((len(records), len(lfs)), dtype=np.int64)
    faults = np.zeros(len(lfs), dtype=np.int64)
    for i, x in enumerate(records):
        x = as_record(x)
        cache: dict[tuple[int, ...], Any] = {}
        row = out[i]
        for j, lf in enumerate(lfs):
            try:
                value = lf.raw_vote(x, cache)
            except LabelModelError as exc:
                raise LabelModelError(f"{exc}{_where(start, i, labels)}") from exc
            except Exception as exc:
                if not fault_tolerant:
                    raise LabelModelError(
                        f"labeling function {lf.name!r} raised {type(exc).__name__}: {exc}"
                        f"{_where(start, i, labels)}; fix the LF, or apply with fault_tolerant=True to let "
                        f"it abstain where it fails"
                    ) from exc
                faults[j] += 1
                row[j] = ABSTAIN
                continue
            if type(value) is int and value >= ABSTAIN:
                row[j] = value
            else:
                row[j] = check_vote(lf.name, value, _where(start, i, labels))
    return out, faults


_WORKER_LFS: list[LabelingFunction] | None = None


def _init_worker(payload: bytes) -> None:
    global _WORKER_LFS
    _WORKER_LFS = pickle.loads(payload)


def _worker_chunk(
    records: Sequence[Any], start: int, fault_tolerant: bool, labels: Sequence[Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_LFS is not None
    return _apply_chunk(_WORKER_LFS, records, start, fault_tolerant, labels)


def _resolve_n_jobs(n_jobs: int) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise LabelModelError(f"n_jobs must be a positive int or -1 (all cores), got {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


class LFApplier:
    """Apply labeling functions to an iterable of records.

    Parameters
    ----------
    lfs
        The labeling functions; their names must be unique. Column ``j`` of the label matrix holds the votes
        of ``lfs[j]``.

    Attributes
    ----------
    fault_counts_
        After :meth:`apply`: LF name -> number of records on which the LF raised (and so abstained).
    """

    def __init__(self, lfs: Sequence[LabelingFunction]) -> None:
        lfs = list(lfs)
        if not lfs:
            raise LabelModelError("no labeling functions given; pass a non-empty list of LabelingFunction")
        for lf in lfs:
            if not isinstance(lf, LabelingFunction):
                raise LabelModelError(
                    f"{lf!r} is not a LabelingFunction; wrap it with @labeling_function() or "
                    f"LabelingFunction(name, f)"
                )
        names = [lf.name for lf in lfs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LabelModelError(
                f"duplicate LF names {duplicates}; give every labeling function a unique name"
            )
        self.lfs = lfs
        self.lf_names = names
        self.fault_counts_: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lfs={self.lf_names})"

    def apply(
        self,
        records: Iterable[Any],
        n_jobs: int = 1,
        progress: bool = False,
        fault_tolerant: bool = True,
    ) -> np.ndarray:
        """Apply the LFs to every record.

        Parameters
        ----------
        records
            Records: dicts (fields readable as ``x.field``), namedtuples or other objects. A DataFrame is
            applied row by row as in :class:`PandasLFApplier`.
        n_jobs
            Worker processes (-1: one per core). With ``n_jobs > 1`` the LFs and records must be picklable:
            define LFs at module level (not lambdas or functions local to another function).
        progress
            Log progress (INFO, logger ``labelmodel.apply``) after each chunk of rows.
        fault_tolerant
            If True, an LF that raises abstains on that record and the fault is counted in
            ``fault_counts_``; if False, the first exception is raised as a :class:`LabelModelError` naming
            the LF and the row.

        Returns
        -------
        numpy.ndarray
            Label matrix of shape (n, m), -1 = abstain, in the smallest int dtype holding the labels.
        """
        if isinstance(records, pd.DataFrame):
            return self._apply_frame(records, n_jobs, progress, fault_tolerant)
        if isinstance(records, (str, bytes)) or not isinstance(records, Iterable):
            raise LabelModelError(
                f"records must be an iterable of records (dicts, namedtuples, ...), got "
                f"{type(records).__name__}"
            )
        return self._run(list(records), None, n_jobs, progress, fault_tolerant)

    def _apply_frame(self, df: pd.DataFrame, n_jobs: int, progress: bool, fault_tolerant: bool) -> np.ndarray:
        bad = [c for c in df.columns if not isinstance(c, str)]
        if bad:
            raise LabelModelError(
                f"DataFrame column names must be strings for LFs to read them, got {bad[:5]}; rename them "
                f"with df.columns = df.columns.astype(str)"
            )
        if df.columns.has_duplicates:
            raise LabelModelError("DataFrame has duplicate column names; make them unique before applying")
        records = [as_record(r) for r in df.to_dict("records")]
        return self._run(records, list(df.index), n_jobs, progress, fault_tolerant)

    def _run(
        self,
        records: list[Any],
        labels: list[Any] | None,
        n_jobs: int,
        progress: bool,
        fault_tolerant: bool,
    ) -> np.ndarray:
        n_jobs = _resolve_n_jobs(n_jobs)
        n, m = len(records), len(self.lfs)
        if n_jobs > 1 and n > 1:
            L, faults = self._run_parallel(records, labels, n_jobs, progress, fault_tolerant)
        else:
            L, faults = self._run_serial(records, labels, progress, fault_tolerant)
        self.fault_counts_ = {name: int(c) for name, c in zip(self.lf_names, faults, strict=True)}
        if faults.any():
            summary = ", ".join(f"{name}: {c}" for name, c in self.fault_counts_.items() if c)
            logger.warning(
                "%d labeling-function faults over %d records (those votes are abstains): %s",
                int(faults.sum()), n, summary,
            )
        max_label = int(L.max()) if L.size else ABSTAIN
        return L.astype(compact_int_dtype(max_label), copy=False) if n else np.empty((0, m), np.int8)

    def _run_serial(
        self, records: list[Any], labels: list[Any] | None, progress: bool, fault_tolerant: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(records)
        step = _SERIAL_PROGRESS_CHUNK if progress else max(n, 1)
        parts, faults = [], np.zeros(len(self.lfs), dtype=np.int64)
        for start in range(0, n, step):
            stop = start + step
            chunk_labels = None if labels is None else labels[start:stop]
            out, f = _apply_chunk(self.lfs, records[start:stop], start, fault_tolerant, chunk_labels)
            parts.append(out)
            faults += f
            if progress:
                logger.info("applied %d LFs to %d/%d records", len(self.lfs), min(start + step, n), n)
        L = np.concatenate(parts) if parts else np.empty((0, len(self.lfs)), np.int64)
        return L, faults

    def _payload(self) -> bytes:
        for lf in self.lfs:
            try:
                pickle.dumps(lf)
            except Exception as exc:
                raise LabelModelError(
                    f"labeling function {lf.name!r} cannot be pickled for n_jobs > 1 ({type(exc).__name__}: "
                    f"{exc}); define its function, resources and preprocessors at module level "
                    f"(no lambdas or nested functions), or apply with n_jobs=1"
                ) from exc
        return pickle.dumps(self.lfs)

    def _run_parallel(
        self,
        records: list[Any],
        labels: list[Any] | None,
        n_jobs: int,
        progress: bool,
        fault_tolerant: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        payload = self._payload()
        n = len(records)
        n_chunks = min(n, n_jobs * _CHUNKS_PER_JOB)
        bounds = np.linspace(0, n, n_chunks + 1).astype(int)
        parts: list[np.ndarray] = []
        faults = np.zeros(len(self.lfs), dtype=np.int64)
        done = 0
        try:
            with ProcessPoolExecutor(
                max_workers=min(n_jobs, n_chunks), initializer=_init_worker, initargs=(payload,)
            ) as pool:
                futures = [
                    pool.submit(
                        _worker_chunk,
                        records[a:b],
                        int(a),
                        fault_tolerant,
                        None if labels is None else labels[a:b],
                    )
                    for a, b in zip(bounds[:-1], bounds[1:], strict=True)
                ]
                try:
                    for fut in futures:
                        out, f = fut.result()
                        parts.append(out)
                        faults += f
                        done += len(out)
                        if progress:
                            logger.info("applied %d LFs to %d/%d records", len(self.lfs), done, n)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # LF exceptions arrive wrapped in LabelModelError, so these come from sending records to workers.
            if not isinstance(exc, pickle.PicklingError) and "pickle" not in str(exc).lower():
                raise
            raise LabelModelError(
                f"records could not be sent to worker processes ({type(exc).__name__}: {exc}); use picklable "
                f"records (dicts, module-level namedtuples) or apply with n_jobs=1"
            ) from exc
        except BrokenProcessPool as exc:
            raise LabelModelError(
                f"a worker process died while applying LFs ({exc}); an LF may crash the interpreter or "
                f"exhaust memory - try n_jobs=1 to find it"
            ) from exc
        return np.concatenate(parts), faults


class PandasLFApplier(LFApplier):
    """Apply labeling functions to the rows of a pandas DataFrame.

    Each row reaches the LFs as a :class:`~labelmodel.lf.Record`: a dict of column -> value whose fields
    are also readable as attributes (``x.text``). Error messages name the row's position and index label.
    """

    def apply(  # type: ignore[override]
        self,
        df: pd.DataFrame,
        n_jobs: int = 1,
        progress: bool = False,
        fault_tolerant: bool = True,
    ) -> np.ndarray:
        """Apply the LFs to every row of ``df``.

        Parameters
        ----------
        df
            The records, one per row.
        n_jobs
            Worker processes (-1: one per core); with ``n_jobs > 1`` the LFs must be picklable.
        progress
            Log progress (INFO) after each chunk of rows.
        fault_tolerant
            If True an LF that raises abstains on that row (counted in ``fault_counts_``); if False the
            exception is raised as a :class:`LabelModelError` naming the LF and row.

        Returns
        -------
        numpy.ndarray
            Label matrix of shape (len(df), m), -1 = abstain, in the smallest int dtype holding the labels.
        """
        if not isinstance(df, pd.DataFrame):
            raise LabelModelError(
                f"PandasLFApplier.apply takes a pandas DataFrame, got {type(df).__name__}; use LFApplier for "
                f"other iterables of records"
            )
        return self._apply_frame(df, n_jobs, progress, fault_tolerant)
