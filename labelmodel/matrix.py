"""Label matrices: validation at the edge and compact, chunked access for the models.

A label matrix L holds one vote per (row, labeling function): a class index in 0..k-1 or -1 (abstain).
It arrives as a numpy array, a scipy.sparse matrix or a pandas DataFrame of vote columns. Inside, it stays
compact: a dense array of int8/int16/int32 codes, or the caller's CSR matrix; the models read it in row
chunks and never build a dense n x (m*k) float64 one-hot matrix.

For scipy.sparse input, stored entries are votes (explicit zeros are class 0) and absent entries abstain;
a stored -1 also abstains. Build such a matrix as ``coo_matrix((labels, (rows, cols)), shape=(n, m))``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from labelmodel.errors import LabelModelError

ABSTAIN = -1
_CHUNK_ELEMENTS = 1 << 22


def compact_dtype(cardinality: int) -> np.dtype:
    """The smallest signed integer dtype that holds classes 0..cardinality-1 and -1."""
    if cardinality <= 127:
        return np.dtype(np.int8)
    if cardinality <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


@dataclass
class LabelMatrix:
    """A validated label matrix: dense compact codes or CSR, plus its shape, cardinality and LF names."""

    codes: np.ndarray | sp.csr_matrix
    cardinality: int
    lf_names: list[str]

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def m(self) -> int:
        return self.codes.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.codes)

    def chunk_rows(self, width: int | None = None) -> int:
        """Rows per chunk so that a chunk of `width` values per row stays near 4M elements."""
        width = width if width is not None else self.m * max(self.cardinality, 2)
        return max(1, _CHUNK_ELEMENTS // max(1, width))

    def chunks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start row, dense codes block) over the matrix, `rows` rows at a time."""
        rows = rows or self.chunk_rows()
        for start in range(0, self.n, rows):
            stop = min(start + rows, self.n)
            if self.is_sparse:
                yield start, _dense_block(self.codes[start:stop], self.cardinality)
            else:
                yield start, self.codes[start:stop]

    def dense(self) -> np.ndarray:
        """The whole matrix as dense compact codes (use on small matrices only)."""
        if not self.is_sparse:
            return self.codes
        return _dense_block(self.codes, self.cardinality)

    def coverage_counts(self) -> np.ndarray:
        """Number of non-abstain votes per LF."""
        counts = np.zeros(self.m, dtype=np.int64)
        for _, block in self.chunks(self.chunk_rows(self.m)):
            counts += (block != ABSTAIN).sum(axis=0)
        return counts

    def vote_counts(self) -> np.ndarray:
        """(m, k) number of votes of each LF for each class."""
        k = self.cardinality
        counts = np.zeros(self.m * k, dtype=np.int64)
        offsets = np.arange(self.m, dtype=np.int64) * k
        for _, block in self.chunks(self.chunk_rows(self.m)):
            voted = block != ABSTAIN
            flat = (offsets[None, :] + block)[voted]
            counts += np.bincount(flat, minlength=self.m * k)
        return counts.reshape(self.m, k)


def _dense_block(block: sp.spmatrix, cardinality: int) -> np.ndarray:
    coo = sp.coo_matrix(block)
    out = np.full(coo.shape, ABSTAIN, dtype=compact_dtype(cardinality))
    out[coo.row, coo.col] = coo.data
    return out


def as_label_matrix(
    L: object,
    cardinality: int | None = None,
    lf_names: Sequence[str] | None = None,
) -> LabelMatrix:
    """Validate L and return it as a compact :class:`LabelMatrix`.

    Parameters
    ----------
    L : numpy array, scipy.sparse matrix or pandas DataFrame, shape (n, m)
        Votes: class indices 0..k-1, or -1 for abstain.
    cardinality : int, optional
        Number of classes k. Inferred as max(L) + 1 (at least 2) when not given.
    lf_names : sequence of str, optional
        One name per column; defaults to DataFrame column names or ``lf_0 .. lf_{m-1}``.

    Returns
    -------
    LabelMatrix
    """
    if isinstance(L, LabelMatrix):
        if cardinality is not None and cardinality != L.cardinality:
            raise LabelModelError(
                f"label matrix has cardinality {L.cardinality} but cardinality={cardinality} was asked; "
                "build the LabelMatrix with the cardinality you want"
            )
        return L
    names = lf_names
    if _is_dataframe(L):
        if names is None:
            names = [str(c) for c in L.columns]
        bad = [c for c, dt in L.dtypes.items() if dt.kind not in "iub"]
        if bad:
            raise LabelModelError(
                f"vote columns must hold integers (class index or -1 for abstain); columns {bad[:5]} do not. "
                "Convert them with df[cols].fillna(-1).astype(int)"
            )
        L = L.to_numpy()
    if sp.issparse(L):
        codes, max_label = _validate_sparse(L)
    else:
        codes, max_label = _validate_dense(L)
    n, m = codes.shape
    k = cardinality if cardinality is not None else max(2, max_label + 1)
    if not isinstance(k, int | np.integer) or k < 1:
        raise LabelModelError(f"cardinality must be a positive integer, got {cardinality!r}")
    if max_label >= k:
        raise LabelModelError(
            f"label matrix holds the vote {max_label} but cardinality is {k} (classes 0..{k - 1}); "
            f"pass cardinality={max_label + 1} or fix the labeling functions"
        )
    if sp.issparse(codes):
        target = compact_dtype(k)
        if codes.dtype != target:
            codes = codes.astype(target)
    elif codes.dtype != compact_dtype(k) and codes.dtype.itemsize > compact_dtype(k).itemsize:
        codes = codes.astype(compact_dtype(k))
    if names is None:
        names = [f"lf_{j}" for j in range(m)]
    names = [str(x) for x in names]
    if len(names) != m:
        raise LabelModelError(f"got {len(names)} LF names for a label matrix with {m} columns; pass one per column")
    if len(set(names)) != len(names):
        raise LabelModelError("LF names must be unique; rename the duplicated labeling functions")
    return LabelMatrix(codes=codes, cardinality=int(k), lf_names=names)


def _is_dataframe(obj: object) -> bool:
    return type(obj).__name__ == "DataFrame" and hasattr(obj, "columns") and hasattr(obj, "to_numpy")


def _validate_dense(L: object) -> tuple[np.ndarray, int]:
    arr = np.asarray(L)
    if arr.ndim != 2:
        raise LabelModelError(
            f"label matrix must be 2-D (n rows x m labeling functions), got shape {arr.shape}; "
            "reshape a single LF's votes with L.reshape(-1, 1)"
        )
    if arr.size == 0:
        raise LabelModelError(f"label matrix is empty (shape {arr.shape}); it needs at least one row and one LF")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise LabelModelError("label matrix contains NaN; use -1 for abstain (np.nan_to_num(L, nan=-1))")
        if not np.all(np.mod(arr, 1) == 0):
            raise LabelModelError("label matrix holds non-integer values; votes are class indices or -1")
        lo, hi = arr.min(), arr.max()
        _check_range(lo)
        arr = arr.astype(np.int64 if hi > 32767 else np.int16)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.int8)
    elif arr.dtype.kind not in "iu":
        raise LabelModelError(
            f"label matrix has dtype {arr.dtype}; it must hold integers (class index, -1 = abstain)"
        )
    lo, hi = int(arr.min()), int(arr.max())
    _check_range(lo)
    if arr.dtype.kind == "u":
        arr = arr.astype(compact_dtype(hi + 1))
    return arr, hi


def _validate_sparse(L: sp.spmatrix) -> tuple[sp.csr_matrix, int]:
    csr = sp.csr_matrix(L)
    if csr.shape[0] == 0 or csr.shape[1] == 0:
        raise LabelModelError(f"label matrix is empty (shape {csr.shape}); it needs at least one row and one LF")
    data = csr.data
    if data.dtype.kind == "f":
        if np.isnan(data).any():
            raise LabelModelError("sparse label matrix stores NaN; leave abstains out or store -1")
        if not np.all(np.mod(data, 1) == 0):
            raise LabelModelError("sparse label matrix stores non-integer values; votes are class indices")
    elif data.dtype.kind not in "iub":
        raise LabelModelError(f"sparse label matrix has dtype {data.dtype}; it must hold integer votes")
    if data.size:
        _check_range(int(data.min()))
    if data.size and (data == ABSTAIN).any():
        keep = data != ABSTAIN
        coo = csr.tocoo()
        csr = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=csr.shape)
    csr.sort_indices()
    hi = int(csr.data.max()) if csr.data.size else 0
    csr.data = csr.data.astype(np.int64)
    return csr, hi


def _check_range(lo: int) -> None:
    if lo < ABSTAIN:
        raise LabelModelError(
            f"label matrix holds the value {lo}; votes are class indices 0..k-1 or -1 for abstain "
            "(remap other abstain codes to -1)"
        )


def check_gold(Y: object, n: int, cardinality: int, what: str = "Y") -> np.ndarray:
    """Validate gold labels for n rows: integers in 0..k-1 (-1 marks an unlabeled row)."""
    y = np.asarray(Y)
    if y.ndim != 1:
        raise LabelModelError(f"{what} must be 1-D with one gold label per row, got shape {y.shape}")
    if y.shape[0] != n:
        raise LabelModelError(
            f"{what} has {y.shape[0]} labels but the label matrix has {n} rows; pass one gold label per row"
        )
    if y.dtype.kind == "f":
        if np.isnan(y).any() or not np.all(np.mod(y, 1) == 0):
            raise LabelModelError(f"{what} must hold integer class indices (no NaN)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise LabelModelError(f"{what} has dtype {y.dtype}; gold labels must be integer class indices")
    if y.size and (y.min() < ABSTAIN or y.max() >= cardinality):
        raise LabelModelError(
            f"{what} holds labels outside 0..{cardinality - 1}; fix the labels or pass the right cardinality"
        )
    return y.astype(np.int64)
