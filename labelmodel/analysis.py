"""LFAnalysis: per-LF and whole-matrix statistics of a label matrix (Snorkel's ``LFAnalysis``, vectorized).

All statistics are counts over rows, so they are computed in one pass over row chunks of the votes
(column index and label of every non-abstain entry). Memory stays O(chunk + nnz of a sparse input); no dense
one-hot or float matrix is built.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from labelmodel.errors import LabelModelError

_CHUNK_ENTRIES = 1 << 22
_MAX_POLARITY_TABLE = 1 << 24
_MAX_LABEL = np.iinfo(np.int32).max - 1


@dataclass
class _Stats:
    votes: np.ndarray  # per LF: rows where it votes
    overlaps: np.ndarray  # per LF: rows where it and another LF vote
    conflicts: np.ndarray  # per LF: rows where it votes and another LF votes a different label
    rows_covered: int
    rows_overlapped: int
    rows_conflicted: int
    polarity_keys: np.ndarray  # sorted unique lf * (max_label + 1) + label


def _check_int_dtype(dtype: np.dtype, what: str) -> None:
    if dtype.kind == "f":
        raise LabelModelError(
            f"{what} has float dtype {dtype}; label matrices hold int class indices with -1 for abstain: "
            f"fill missing votes with -1 and cast with .astype(np.int64)"
        )
    if dtype.kind not in "iu":
        raise LabelModelError(
            f"{what} has dtype {dtype}; it must hold int class indices 0..k-1 with -1 for abstain "
            f"(map labels to indices, then cast with .astype(np.int64))"
        )


def _frame_to_array(df: pd.DataFrame) -> np.ndarray:
    na_cols = [c for c in df.columns if df[c].isna().any()]
    if na_cols:
        raise LabelModelError(
            f"label matrix has NaN / missing votes in columns {na_cols[:5]}; fill them with -1 (abstain): "
            f"df.fillna(-1).astype('int64')"
        )
    dtypes = []
    for c in df.columns:
        dtype = df[c].dtype
        dtype = getattr(dtype, "numpy_dtype", dtype)
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iu":
            raise LabelModelError(
                f"vote column {c!r} has dtype {df[c].dtype}; vote columns must be int class indices with -1 "
                f"for abstain (cast with df[{c!r}].astype('int64'))"
            )
        dtypes.append(dtype)
    return df.to_numpy(dtype=np.result_type(*dtypes))


def _check_dense(L: np.ndarray) -> np.ndarray:
    if L.dtype.kind == "f" and np.isnan(L).any():
        raise LabelModelError(
            "label matrix contains NaN; use -1 for abstain and an int dtype: "
            "np.nan_to_num(L, nan=-1).astype(int)"
        )
    _check_int_dtype(L.dtype, "label matrix")
    if L.ndim != 2:
        raise LabelModelError(
            f"label matrix must be 2-D (n records x m LFs), got shape {L.shape}; a single LF's votes "
            f"reshape with L.reshape(-1, 1)"
        )
    return L


def _check_sparse(L: Any) -> sp.csr_array:
    _check_int_dtype(L.dtype, "sparse label matrix")
    csr = sp.csr_array(L)  # a COO input's duplicate cells are summed here and show as a smaller nnz
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    if csr.nnz != L.nnz:
        raise LabelModelError(
            "sparse label matrix has duplicate entries for one (row, LF) cell; store one vote per cell "
            "(absent entry = abstain, stored value = class index)"
        )
    return csr


def _validate_matrix(L: Any) -> tuple[np.ndarray | sp.csr_array, list[Any] | None, int]:
    """Return the checked matrix (dense array or CSR), the DataFrame's column names, and the largest label."""
    names = None
    if isinstance(L, pd.DataFrame):
        names = list(L.columns)
        L = _frame_to_array(L)
    if sp.issparse(L):
        L = _check_sparse(L)
        values = L.data
    else:
        L = _check_dense(np.asarray(L))
        values = L
    n, m = L.shape
    if n == 0 or m == 0:
        raise LabelModelError(
            f"label matrix is empty (shape {L.shape}); it needs at least one record and one LF"
        )
    if values.size and values.min() < -1:
        bad = values[values < -1]
        raise LabelModelError(
            f"label matrix has {bad.size} entries below -1 (e.g. {int(bad[0])}); votes must be class indices "
            f"0..k-1 and abstain must be -1"
        )
    max_label = int(values.max()) if values.size else -1
    if max_label > _MAX_LABEL:
        raise LabelModelError(
            f"label matrix has label {max_label}; votes must be class indices 0..k-1 (at most {_MAX_LABEL}): "
            f"map raw labels to indices first"
        )
    if L.dtype == np.uint64:
        L = L.astype(np.int64)
    return L, names, max_label


def _validate_gold(Y: Any, n: int) -> np.ndarray:
    if isinstance(Y, (pd.Series, pd.Index)):
        if Y.isna().any():
            raise LabelModelError("Y contains missing values; drop rows without gold labels from L and Y")
        if pd.api.types.is_integer_dtype(Y.dtype):
            Y = Y.to_numpy(dtype=np.int64)
    Y = np.asarray(Y)
    if Y.ndim == 2 and Y.shape[1] == 1:
        Y = Y[:, 0]
    if Y.ndim != 1:
        raise LabelModelError(f"Y must be a 1-D array of gold class indices, got shape {Y.shape}")
    if Y.dtype.kind == "f" and np.isnan(Y).any():
        raise LabelModelError("Y contains NaN; drop rows without gold labels from L and Y")
    _check_int_dtype(Y.dtype, "Y")
    if Y.shape[0] != n:
        raise LabelModelError(
            f"Y has {Y.shape[0]} labels but the label matrix has {n} rows; pass one gold label per row of L"
        )
    if Y.size and Y.min() < 0:
        raise LabelModelError(
            "Y has negative labels; gold labels must be class indices >= 0 "
            "(drop rows without gold from L and Y)"
        )
    return Y


class LFAnalysis:
    """Coverage, overlap, conflict and accuracy statistics of labeling functions from their label matrix.

    Parameters
    ----------
    L
        Label matrix (n records x m LFs) of int class indices with -1 = abstain, as a numpy array, a pandas
        DataFrame of vote columns, or a scipy.sparse matrix in which every stored entry is a vote (its value
        is the class index, so a vote for class 0 is an explicitly stored 0) and absent entries abstain
        (stored -1 entries abstain too).
    lf_names
        One name per column (strings, or LabelingFunction objects whose names are used). Defaults to the
        DataFrame's columns, else to the column positions 0..m-1.
    """

    def __init__(self, L: Any, lf_names: Sequence[Any] | None = None) -> None:
        self._L, frame_names, self._max_label = _validate_matrix(L)
        self.n, self.m = (int(d) for d in self._L.shape)
        if lf_names is not None:
            names = [getattr(x, "name", x) for x in lf_names]
            if len(names) != self.m:
                raise LabelModelError(
                    f"{len(names)} LF names given for a label matrix with {self.m} columns; "
                    f"pass one name per column"
                )
        else:
            names = frame_names if frame_names is not None else list(range(self.m))
        if len(set(names)) != len(names):
            raise LabelModelError("LF names must be unique; rename the duplicated labeling functions")
        self.lf_names: list[Any] = names
        self._stats: _Stats | None = None

    def _chunks(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (start, stop, votes per row, LF index per vote, label per vote) over row chunks."""
        step = max(1, _CHUNK_ENTRIES // self.m)
        L = self._L
        for a in range(0, self.n, step):
            b = min(a + step, self.n)
            if sp.issparse(L):
                lo, hi = L.indptr[a], L.indptr[b]
                cols, vals = L.indices[lo:hi], L.data[lo:hi]
                counts = np.diff(L.indptr[a : b + 1])
                keep = vals != -1
                if not keep.all():
                    rows = np.repeat(np.arange(b - a), counts)[keep]
                    counts = np.bincount(rows, minlength=b - a)
                    cols, vals = cols[keep], vals[keep]
            else:
                C = np.ascontiguousarray(L[a:b])
                mask = C != -1
                counts = np.count_nonzero(mask, axis=1)
                flat = np.flatnonzero(mask)
                cols = flat % self.m
                vals = C.ravel().take(flat)
            yield a, b, counts, cols.astype(np.int64, copy=False), vals

    def _compute(self) -> _Stats:
        if self._stats is not None:
            return self._stats
        m, width = self.m, self._max_label + 1
        votes, overlaps, conflicts = (np.zeros(m, np.int64) for _ in range(3))
        covered = overlapped = conflicted = 0
        use_table = m * width <= _MAX_POLARITY_TABLE
        table = np.zeros(m * width if use_table else 0, np.int64)
        keys = np.empty(0, np.int64)
        for a, b, counts, cols, vals in self._chunks():
            nz = counts > 0
            row_conflict = np.zeros(b - a, bool)
            if vals.size:
                starts = (np.cumsum(counts) - counts)[nz]
                row_conflict[nz] = np.maximum.reduceat(vals, starts) != np.minimum.reduceat(vals, starts)
            row_overlap = counts > 1
            covered += int(nz.sum())
            overlapped += int(row_overlap.sum())
            conflicted += int(row_conflict.sum())
            votes += np.bincount(cols, minlength=m)
            overlaps += np.bincount(cols[np.repeat(row_overlap, counts)], minlength=m)
            conflicts += np.bincount(cols[np.repeat(row_conflict, counts)], minlength=m)
            chunk_keys = cols * width + vals
            if use_table:
                table += np.bincount(chunk_keys, minlength=table.size)
            else:
                keys = np.union1d(keys, chunk_keys)
        if use_table:
            keys = np.flatnonzero(table)
        self._stats = _Stats(votes, overlaps, conflicts, covered, overlapped, conflicted, keys)
        return self._stats

    def lf_polarities(self) -> list[list[int]]:
        """Return, for each LF, the sorted list of labels it emits (abstain excluded)."""
        keys = self._compute().polarity_keys
        width = self._max_label + 1
        out: list[list[int]] = [[] for _ in range(self.m)]
        for j, label in zip((keys // width).tolist(), (keys % width).tolist(), strict=True):
            out[j].append(label)
        return out

    def lf_coverages(self) -> np.ndarray:
        """Return, for each LF, the fraction of rows it votes on."""
        return self._compute().votes / self.n

    def lf_overlaps(self, normalize_by_coverage: bool = False) -> np.ndarray:
        """Return, for each LF, the fraction of rows where it and at least one other LF vote.

        Parameters
        ----------
        normalize_by_coverage
            Divide by the LF's coverage (fraction of its votes that overlap; 0 for an LF that never votes).
        """
        s = self._compute()
        if normalize_by_coverage:
            return np.divide(s.overlaps, s.votes, out=np.zeros(self.m), where=s.votes > 0)
        return s.overlaps / self.n

    def lf_conflicts(self, normalize_by_overlaps: bool = False) -> np.ndarray:
        """Return, for each LF, the fraction of rows where it votes and another LF votes a different label.

        Parameters
        ----------
        normalize_by_overlaps
            Divide by the LF's overlaps (fraction of its overlaps that conflict; 0 where it has none).
        """
        s = self._compute()
        if normalize_by_overlaps:
            return np.divide(s.conflicts, s.overlaps, out=np.zeros(self.m), where=s.overlaps > 0)
        return s.conflicts / self.n

    def lf_correct_counts(self, Y: Any) -> np.ndarray:
        """Return, for each LF, the number of rows where its vote equals the gold label ``Y``."""
        Y = _validate_gold(Y, self.n)
        correct = np.zeros(self.m, np.int64)
        for a, _, counts, cols, vals in self._chunks():
            hit = vals == np.repeat(Y[a : a + counts.size], counts)
            correct += np.bincount(cols[hit], minlength=self.m)
        return correct

    def lf_empirical_accuracies(self, Y: Any) -> np.ndarray:
        """Return, for each LF, the fraction of its votes equal to the gold label (NaN if it never votes).

        Parameters
        ----------
        Y
            Gold class indices, one per row of L.
        """
        votes = self._compute().votes
        correct = self.lf_correct_counts(Y)
        return np.divide(correct, votes, out=np.full(self.m, np.nan), where=votes > 0)

    def label_coverage(self) -> float:
        """Return the fraction of rows with at least one vote."""
        return self._compute().rows_covered / self.n

    def label_overlap(self) -> float:
        """Return the fraction of rows with at least two votes."""
        return self._compute().rows_overlapped / self.n

    def label_conflict(self) -> float:
        """Return the fraction of rows with at least two different (non-abstain) votes."""
        return self._compute().rows_conflicted / self.n

    def summary(self, Y: Any = None, weights: Any = None) -> pd.DataFrame:
        """Return a per-LF summary table.

        Parameters
        ----------
        Y
            Optional gold class indices, one per row; adds Correct, Incorrect and Emp. Acc. (NaN for an LF
            that never votes).
        weights
            Optional learned weight per LF (e.g. a label model's accuracies); adds Learned Weight.

        Returns
        -------
        pandas.DataFrame
            Indexed by LF name, with columns j, Polarity, Coverage, Overlaps, Conflicts and the optional ones.
        """
        s = self._compute()
        data: dict[str, Any] = {
            "j": np.arange(self.m),
            "Polarity": self.lf_polarities(),
            "Coverage": self.lf_coverages(),
            "Overlaps": self.lf_overlaps(),
            "Conflicts": self.lf_conflicts(),
        }
        if Y is not None:
            correct = self.lf_correct_counts(Y)
            data["Correct"] = correct
            data["Incorrect"] = s.votes - correct
            data["Emp. Acc."] = np.divide(correct, s.votes, out=np.full(self.m, np.nan), where=s.votes > 0)
        if weights is not None:
            try:
                w = np.asarray(weights, dtype=float).ravel()
            except (TypeError, ValueError) as exc:
                raise LabelModelError(f"weights must be numbers, one per LF ({exc})") from exc
            if w.shape != (self.m,):
                raise LabelModelError(
                    f"weights has {w.size} entries for {self.m} LFs; pass one weight per LF"
                )
            data["Learned Weight"] = w
        return pd.DataFrame(data, index=pd.Index(self.lf_names))
