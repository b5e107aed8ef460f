"""Label-model demo: keyword labeling functions over product reviews, aggregated by a label model.

Run it with ``make demo`` (or ``python examples/labelmodel_demo.py``). It writes labeling functions the
Snorkel way, applies them to examples/inputs/reviews.csv, analyses them, and compares majority vote with
``LabelModel(method="auto")`` against the gold labels the file carries.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from labelmodel import ABSTAIN, LabelModel, LFAnalysis, MajorityVote, PandasLFApplier, labeling_function

NEGATIVE, POSITIVE = 0, 1
DATA = Path(__file__).resolve().parent / "inputs" / "reviews.csv"


def keyword_lf(name: str, words: list[str], label: int):
    @labeling_function(name=name)
    def lf(x) -> int:
        text = x.text.lower()
        return label if any(w in text for w in words) else ABSTAIN

    return lf


LFS = [
    keyword_lf("love", ["love", "loves"], POSITIVE),
    keyword_lf("great_good", ["great", "good", "excellent", "superb", "fantastic"], POSITIVE),
    keyword_lf("recommend", ["recommend", "would buy again", "best"], POSITIVE),
    keyword_lf("happy", ["happy", "pleased", "perfect"], POSITIVE),
    keyword_lf("broke", ["broke", "broken", "stopped", "never worked", "faulty"], NEGATIVE),
    keyword_lf("waste", ["waste", "worst", "do not buy", "not worth"], NEGATIVE),
    keyword_lf("poor_bad", ["poor", "bad", "terrible", "awful", "horrible", "cheap"], NEGATIVE),
    keyword_lf("returned", ["return", "refund", "leak"], NEGATIVE),
    keyword_lf("not_negation", ["not "], NEGATIVE),
]


def main() -> int:
    df = pd.read_csv(DATA)
    L = PandasLFApplier(LFS).apply(df)
    names = [lf.name for lf in LFS]
    print(f"{len(df)} reviews, {len(LFS)} labeling functions\n")
    print(LFAnalysis(L, names).summary(Y=df["label"].to_numpy()).round(2).to_string())
    mv = MajorityVote(cardinality=2).fit(L)
    auto = LabelModel(cardinality=2).fit(L)
    y = df["label"].to_numpy()
    print(f"\nmajority vote accuracy:       {mv.score(L, y)['accuracy']:.3f}")
    print(f"LabelModel(auto) accuracy:    {auto.score(L, y)['accuracy']:.3f}  (chose {auto.chosen_}: {auto.reason_})")
    if auto.chosen_ != "majority":
        learned = zip(names, auto.accuracies_, strict=True)
        print("\nlearned LF accuracies: " + ", ".join(f"{n}={a:.2f}" for n, a in learned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
