"""Shared numerics: one-hot chunks, vote moments and log-space posteriors over a label matrix.

Every model reads the label matrix in row chunks. A chunk becomes a one-hot matrix X (rows x m*k): dense
float32 when m*k is small enough for BLAS to win, CSR otherwise. Column j*k + l of X is 1 where LF j voted l;
abstains are all-zero. With a table T (m*k x k) of log P(vote | class), the log-likelihood of every class for
every row is X @ T, and the expected vote counts of an EM M-step are X.T @ Q.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from labelmodel.matrix import ABSTAIN, LabelMatrix

DENSE_ONEHOT_MAX_WIDTH = 2048


def onehot_block(block: np.ndarray, cardinality: int, dense: bool) -> np.ndarray | sp.csr_matrix:
    """One-hot encode a dense block of codes (rows x m) into rows x (m*k), float32."""
    rows, m = block.shape
    k = cardinality
    if dense:
        lookup = np.zeros((k + 1, k), dtype=np.float32)
        lookup[1:] = np.eye(k, dtype=np.float32)
        return np.take(lookup, block.astype(np.intp) + 1, axis=0).reshape(rows, m * k)
    voted = block != ABSTAIN
    counts = voted.sum(axis=1)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    cols = (np.arange(m, dtype=np.int64)[None, :] * k + block)[voted]
    data = np.ones(cols.shape[0], dtype=np.float32)
    return sp.csr_matrix((data, cols, indptr), shape=(rows, m * k))


def onehot_chunks(lm: LabelMatrix, rows: int | None = None) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
    """Yield (start row, one-hot chunk) over the whole label matrix."""
    width = lm.m * lm.cardinality
    dense = width <= DENSE_ONEHOT_MAX_WIDTH
    rows = rows or lm.chunk_rows(width if dense else lm.m * 4)
    for start, block in lm.chunks(rows):
        yield start, onehot_block(block, lm.cardinality, dense)


def second_moments(lm: LabelMatrix) -> np.ndarray:
    """O = X.T @ X / n over the one-hot votes: (m*k x m*k) joint vote frequencies of LF pairs."""
    width = lm.m * lm.cardinality
    O = np.zeros((width, width), dtype=np.float64)
    for _, X in onehot_chunks(lm):
        if sp.issparse(X):
            O += (X.T @ X).toarray()
        else:
            O += X.T @ X
    return O / lm.n


def pair_statistics(lm: LabelMatrix) -> tuple[np.ndarray, np.ndarray]:
    """Per LF pair, the number of rows where both vote and where both vote the same class.

    Returns
    -------
    both : (m, m) int64 counts of rows where LFs i and j both vote (diagonal: coverage of i).
    agree : (m, m) int64 counts of rows where they vote the same class (diagonal: coverage of i).
    """
    m, k = lm.m, lm.cardinality
    if m * k <= DENSE_ONEHOT_MAX_WIDTH or m * m * 4 > 1 << 24:
        O = second_moments(lm) * lm.n
        blocks = O.reshape(m, k, m, k)
        both = blocks.sum(axis=(1, 3))
        agree = np.einsum("iljl->ij", blocks)
        return np.rint(both).astype(np.int64), np.rint(agree).astype(np.int64)
    both = np.zeros((m, m), dtype=np.int64)
    agree = np.zeros((m, m), dtype=np.int64)
    for _, block in lm.chunks(lm.chunk_rows(m * 4)):
        voted = (block != ABSTAIN).astype(np.float32)
        both += np.rint(voted.T @ voted).astype(np.int64)
        for j in range(m):
            same = (block == block[:, j : j + 1]) & (block != ABSTAIN)
            agree[j] += same.sum(axis=0)
    return both, agree


def table_log_joint(X: np.ndarray | sp.csr_matrix, table: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """log P(y) + sum over voting LFs of log P(vote | y), for one one-hot chunk."""
    scores = X @ table.astype(np.float32 if not sp.issparse(X) else np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    scores += log_prior[None, :]
    return scores


def diagonal_log_joint(
    block: np.ndarray,
    log_correct: np.ndarray,
    log_wrong: np.ndarray,
    log_prior: np.ndarray,
) -> np.ndarray:
    """Log joint for the symmetric ("diagonal") model without a k x k table per LF.

    log_correct[j, y] = w_j log P(LF j votes y | Y=y, votes); log_wrong[j, y] = w_j log P(LF j votes a
    given other class | Y=y, votes). Every voting LF adds log_wrong[j, :] to all classes, then the class it
    voted gets the difference. Cost O(rows * m * k) in one BLAS product plus O(votes) scattering.
    """
    rows, m = block.shape
    k = log_prior.shape[0]
    voted = block != ABSTAIN
    scores = voted.astype(np.float64) @ log_wrong
    scores += log_prior[None, :]
    r, j = np.nonzero(voted)
    labels = block[r, j].astype(np.int64)
    bonus = log_correct[j, labels] - log_wrong[j, labels]
    flat = scores.reshape(-1)
    flat += np.bincount(r * k + labels, weights=bonus, minlength=rows * k)
    return scores


def diagonal_to_table(log_correct: np.ndarray, log_wrong: np.ndarray) -> np.ndarray:
    """The full (m*k x k) log table of a diagonal model: T[(j, l), y] = correct if l == y else wrong."""
    m, k = log_correct.shape
    table = np.broadcast_to(log_wrong[:, None, :], (m, k, k)).copy()
    idx = np.arange(k)
    table[:, idx, idx] = log_correct
    return table.reshape(m * k, k)
