"""Embroid's published demo reproduced on its own files (../shared/data/embroid_dbpedia).

The demo: one LM's votes on 2,000 DBPedia "is it an animal?" sentences, each row's 20 nearest neighbours in
three embedding spaces (RoBERTa, Sentence-BERT, BERT; the files list each row itself first, so column 0 is
dropped). Published macro-F1: 0.72 for the votes alone, 0.77 after Embroid (k = 10, thresholds = the votes'
own class shares, FlyingSquid over original + smoothed votes). Prints our figures for the paper's setting
and for each of our label models over the same columns.

    python benchmarks/embroid_dbpedia.py [--data ../shared/data/embroid_dbpedia]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from prompting.embroid import Embroid, smooth_votes

ROOT = Path(__file__).resolve().parents[1]
SPACES = ("roberta", "sbert", "bert")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "embroid_dbpedia")
    args = parser.parse_args()
    votes = np.load(args.data / "votes.npy")
    labels = np.load(args.data / "labels.npy")
    knn = [np.load(args.data / f"{space}_knn20.npy")[:, 1:] for space in SPACES]

    def f1(pred: np.ndarray) -> float:
        return f1_score(labels, pred, average="macro")

    print(f"rows {len(labels)}, sources {votes.shape[1]}, spaces {', '.join(SPACES)}")
    print(f"{'votes alone':<48} macro-F1 {f1(votes[:, 0]):.4f}   (published 0.72)")
    smoothed = smooth_votes(votes, knn, k=10)
    for s, space in enumerate(SPACES):
        print(f"{'neighbourhood vote, ' + space + ' alone':<48} macro-F1 {f1(smoothed[:, s]):.4f}")
    import labelmodel  # noqa: F401 - imported before timing (torch's import dominates a first call)

    started = time.perf_counter()
    paper = Embroid().fit_predict(votes, knn)
    took = time.perf_counter() - started
    print(f"{'Embroid() defaults: triplet, uniform balance':<48} macro-F1 {f1(paper):.4f}   (published 0.77; "
          f"smoothing + label model {took * 1000:.0f} ms)")
    for method in ("triplet", "dawid_skene", "matrix_completion", "majority"):
        for balance in ("uniform", "estimate"):
            pred = Embroid(label_model=method, class_balance=balance).fit_predict(votes, knn)
            print(f"{'Embroid label_model=' + method + ', ' + balance:<48} macro-F1 {f1(pred):.4f}")
    for k in (5, 10, 15, 19):
        pred = Embroid(k=k).fit_predict(votes, knn)
        print(f"{'Embroid() with k=' + str(k):<48} macro-F1 {f1(pred):.4f}")


if __name__ == "__main__":
    main()
