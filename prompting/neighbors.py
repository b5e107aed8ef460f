"""k nearest neighbours of every row among the other rows, with scikit-learn or faiss, chosen by size.

Backends (``backend="auto"`` picks by ``n``; see :data:`FAISS_MIN_ROWS` and :data:`IVF_MIN_ROWS`):

* ``"sklearn"``: exact brute force (``NearestNeighbors(algorithm="brute")``), chunked distance matrices;
* ``"faiss"``: exact search in a flat index (``IndexFlatIP`` on unit vectors for cosine, ``IndexFlatL2``);
  the same neighbours as scikit-learn up to ties, about twice as fast on 2 cores;
* ``"ivf"``: approximate search in a faiss inverted-file index (k-means cells, seeded), for very large n
  where exact search is quadratic.

faiss is optional: without it, ``"auto"`` uses scikit-learn at every size (with a log line once n is large).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from prompting.errors import PromptingError

logger = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")
BACKENDS = ("auto", "sklearn", "faiss", "ivf")

# From this many rows "auto" uses faiss' exact flat index. Both backends are exact and quadratic in n (the
# same neighbours, up to ties), but faiss runs the search as blocked BLAS products with a heap selection while
# scikit-learn materializes chunks of the distance matrix and sorts them. Measured on the sandbox's 2-core CPU
# (shared, loaded), d = 384, k = 10, `python benchmarks/neighbors.py` (docs/benchmarks.md): sklearn / faiss
# 0.15 / 0.09 s at n = 1,000, 0.34 / 0.16 s at 2,000, 1.5 / 0.9 s at 5,000, 5.5 / 3.0 s at 10,000. Below
# 2,000 rows the difference is a tenth of a second, so small data stays on scikit-learn, which every install
# has and which is the reference the faiss path is tested against; from 2,000 rows on faiss saves seconds
# and, since the cost is quadratic, minutes at tens of thousands.
FAISS_MIN_ROWS = 2_000
# From this many rows "auto" uses an approximate inverted-file index (faiss IndexIVFFlat) instead: exact search
# costs n^2 d multiply-adds (117 s at n = 50,000 on the same machine, growing quadratically), while IVF
# compares each row only with the rows of its nprobe nearest k-means cells (4 sqrt(n) cells, 32 probed: 58 s
# at 50,000, recall@10 1.000 against exact search on clustered data, and about n^1.5 growth). IVF rather than
# HNSW because its k-means is seeded and its search is per query, so results are the same run to run (HNSW's
# multi-threaded graph construction is not); a neighbourhood vote share tolerates a missed neighbour.
IVF_MIN_ROWS = 50_000
IVF_NPROBE = 32


def faiss_available() -> bool:
    """Whether ``faiss`` (the ``faiss-cpu`` package) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(n: int, backend: str = "auto") -> str:
    """The backend ``nearest_neighbors`` uses for ``n`` rows.

    Parameters
    ----------
    n
        Number of rows.
    backend
        ``"auto"`` or an explicit backend name.

    Returns
    -------
    str
        ``"sklearn"``, ``"faiss"`` or ``"ivf"``.
    """
    if backend not in BACKENDS:
        raise PromptingError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend != "auto":
        if backend in ("faiss", "ivf") and not faiss_available():
            raise PromptingError(
                f"backend={backend!r} needs faiss; install it with `pip install faiss-cpu` or use backend='sklearn'"
            )
        return backend
    if n < FAISS_MIN_ROWS:
        return "sklearn"
    if not faiss_available():
        logger.info("nearest_neighbors: %d rows and no faiss; exact search with scikit-learn (pip install "
                    "faiss-cpu for a faster index)", n)
        return "sklearn"
    return "ivf" if n >= IVF_MIN_ROWS else "faiss"


def nearest_neighbors(embeddings: np.ndarray, k: int, metric: str = "cosine", backend: str = "auto",
                      seed: int = 0) -> np.ndarray:
    """Indices of each row's ``k`` nearest other rows, nearest first.

    Parameters
    ----------
    embeddings
        ``(n, d)`` array, one row per record.
    k
        Neighbours per row; at most ``n - 1``.
    metric
        ``"cosine"`` (rows are normalized, then compared by inner product) or ``"euclidean"``.
    backend
        ``"auto"`` (by size, see the module docstring), ``"sklearn"``, ``"faiss"`` (exact) or ``"ivf"``
        (approximate).
    seed
        Seed of the IVF index's k-means (the exact backends use none).

    Returns
    -------
    numpy.ndarray
        ``(n, k)`` int64; row ``i`` never lists ``i`` itself. Among equidistant candidates (exact duplicates)
        the order may differ between backends.
    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise PromptingError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise PromptingError("embeddings must be finite numbers (found NaN, inf or a non-numeric dtype)")
    n = x.shape[0]
    if not isinstance(k, int | np.integer) or k < 1:
        raise PromptingError(f"k must be a positive integer, got {k!r}")
    if k > n - 1:
        raise PromptingError(f"k={k} neighbours asked for but there are only {n} rows ({n - 1} others); lower k")
    if metric not in METRICS:
        raise PromptingError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    chosen = choose_backend(n, backend)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    started = time.perf_counter()
    if chosen == "sklearn":
        found = _sklearn(x, k + 1, metric)
    else:
        found = _faiss(x, k + 1, metric, approximate=chosen == "ivf", seed=seed)
    out = drop_self(found, k)
    logger.debug("nearest_neighbors: n=%d k=%d %s/%s in %.2fs", n, k, chosen, metric, time.perf_counter() - started)
    return out


def drop_self(found: np.ndarray, k: int) -> np.ndarray:
    """From ``(n, k + 1)`` candidates (nearest first) keep ``k`` per row that are not the row itself.

    A row usually finds itself first; with exact duplicates it may come later or not at all (then the last
    candidate is dropped).
    """
    n = found.shape[0]
    is_self = found == np.arange(n)[:, None]
    # keep the first k candidates that are not the row itself (and not -1 padding from an approximate index)
    keep = ~is_self & (found >= 0)
    rank = np.cumsum(keep, axis=1)
    keep &= rank <= k
    counts = keep.sum(axis=1)
    if (counts < k).any():
        rows = np.flatnonzero(counts < k)[:5].tolist()
        raise PromptingError(
            f"the neighbour index returned fewer than {k} neighbours for rows {rows}; use backend='faiss' or "
            "'sklearn' (exact) or lower k"
        )
    return found[keep].reshape(n, k).astype(np.int64)


def _sklearn(x: np.ndarray, k: int, metric: str) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    # On unit vectors the euclidean order is the cosine order, and sklearn's euclidean brute force is a GEMM.
    index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean")
    index.fit(x)
    return index.kneighbors(x, return_distance=False)


def _faiss(x: np.ndarray, k: int, metric: str, approximate: bool, seed: int) -> np.ndarray:
    import faiss

    d = x.shape[1]
    flat = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
    index = flat
    if approximate:
        n = x.shape[0]
        kind = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        cells = max(1, min(int(4 * np.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(flat, d, cells, kind)
        index.cp.seed = seed
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * cells), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = min(IVF_NPROBE, cells)
    index.add(x)
    _, found = index.search(x, k)
    return found
