"""Label-model quality on the WRENCH sets, ours vs Snorkel and crowd-kit in the same run.

Fit on train (label models see votes only), score every test row. Metric: accuracy, except sms (F1 of the
spam class), as WRENCH reports them. Ties and rows nobody votes on are broken by the seeded hash rule of
Snorkel's / WRENCH's probs_to_preds, for every model. crowd-kit's DawidSkene is transductive (it has no
predict for new rows), so it is fitted on train + test votes together and scored on the test rows.

    python benchmarks/labelmodel_quality.py [--data ../shared/data/wrench] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labelmodel import (  # noqa: E402
    DawidSkene,
    LabelModel,
    MajorityVote,
    MatrixCompletion,
    Triplet,
    WeightedMajorityVote,
    probs_to_preds,
    score_predictions,
)
from labelmodel.datasets import load_wrench  # noqa: E402

SETS = ["youtube", "sms", "trec", "hausa"]
METRIC = {"sms": "f1"}


def ours(train, valid, metric: str) -> dict[str, tuple[float, object]]:
    k = train.cardinality
    dev = {"Y_dev": valid.y, "L_dev": valid.L}
    models = {
        "MajorityVote": (MajorityVote(cardinality=k), {}),
        "WeightedMajorityVote (dev)": (WeightedMajorityVote(cardinality=k), dev),
        "DawidSkene": (DawidSkene(cardinality=k), {}),
        "DawidSkene diagonal": (DawidSkene(cardinality=k, confusion="diagonal"), {}),
        "MatrixCompletion": (MatrixCompletion(cardinality=k), {}),
        "Triplet": (Triplet(cardinality=k), {}),
        "LabelModel auto": (LabelModel(cardinality=k), {}),
        "LabelModel auto (dev)": (LabelModel(cardinality=k, dev_metric=metric), dev),
    }
    out = {}
    for label, (model, kwargs) in models.items():
        start = time.perf_counter()
        model.fit(train.L, **kwargs)
        out[label] = (time.perf_counter() - start, model)
    return out


def peers(train, test, valid) -> dict[str, np.ndarray]:
    from crowdkit.aggregation import DawidSkene as CrowdKitDS
    from snorkel.labeling.model import LabelModel as SnorkelLabelModel
    from snorkel.labeling.model import MajorityLabelVoter

    k = train.cardinality
    L_train, L_test = train.L.astype(np.int64), test.L.astype(np.int64)
    probs = {}
    slm = SnorkelLabelModel(cardinality=k, verbose=False)
    slm.fit(L_train, seed=0, progress_bar=False)
    probs["snorkel LabelModel"] = slm.predict_proba(L_test)
    slm_dev = SnorkelLabelModel(cardinality=k, verbose=False)
    slm_dev.fit(L_train, Y_dev=valid.y, seed=0, progress_bar=False)
    probs["snorkel LabelModel (Y_dev balance)"] = slm_dev.predict_proba(L_test)
    probs["snorkel MajorityLabelVoter"] = MajorityLabelVoter(cardinality=k).predict_proba(L_test)
    stacked = np.vstack([L_train, L_test])
    rows, cols = np.nonzero(stacked != -1)
    df = pd.DataFrame({"task": rows, "worker": cols, "label": stacked[rows, cols]})
    ds = CrowdKitDS(n_iter=100).fit(df)
    table = ds.probas_.reindex(index=range(len(stacked)), columns=range(k)).fillna(0.0).to_numpy().copy()
    table[table.sum(axis=1) == 0] = 1.0 / k
    probs["crowd-kit DawidSkene"] = table[len(L_train):]
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wrench")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    results: dict[str, dict[str, float]] = {}
    notes = {}
    for name in SETS:
        folder = args.data / name
        train, valid, test = (load_wrench(folder, s) for s in ("train", "valid", "test"))
        k, metric = train.cardinality, METRIC.get(name, "accuracy")
        for label, (_, model) in ours(train, valid, metric).items():
            preds = model.predict(test.L)
            results.setdefault(label, {})[name] = 100 * score_predictions(test.y, preds, None, (metric,), k)[metric]
            if label.startswith("LabelModel"):
                notes[f"{label} on {name}"] = model.chosen_
        for label, probs in peers(train, test, valid).items():
            preds = probs_to_preds(np.asarray(probs, dtype=np.float64))
            results.setdefault(label, {})[name] = 100 * score_predictions(test.y, preds, None, (metric,), k)[metric]
    print("| model | " + " | ".join(SETS) + " | average |")
    print("|---|" + "---|" * (len(SETS) + 1))
    for label, row in results.items():
        avg = float(np.mean([row[s] for s in SETS]))
        row["average"] = avg
        print(f"| {label} | " + " | ".join(f"{row[s]:.1f}" for s in SETS) + f" | {avg:.2f} |")
    print("\nmodels chosen by LabelModel(method='auto'):")
    for key, chosen in notes.items():
        print(f"  {key}: {chosen}")
    if args.json:
        args.json.write_text(json.dumps({"scores": results, "chosen": notes}, indent=2))


if __name__ == "__main__":
    main()
