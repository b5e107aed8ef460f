"""Keyword labeling functions for examples/inputs/reviews.csv (0 = negative, 1 = positive).

Used by examples/reviews.yaml through the ``lfs`` step; every module-level ``@labeling_function()`` becomes
one vote column.
"""

from labelmodel import ABSTAIN, labeling_function

NEGATIVE, POSITIVE = 0, 1


def _has(x, words: list[str]) -> bool:
    text = x.text.lower()
    return any(w in text for w in words)


@labeling_function()
def love(x) -> int:
    return POSITIVE if _has(x, ["love", "loves"]) else ABSTAIN


@labeling_function()
def great_good(x) -> int:
    return POSITIVE if _has(x, ["great", "good", "excellent", "superb", "fantastic"]) else ABSTAIN


@labeling_function()
def recommend(x) -> int:
    return POSITIVE if _has(x, ["recommend", "would buy again", "best"]) else ABSTAIN


@labeling_function()
def happy(x) -> int:
    return POSITIVE if _has(x, ["happy", "pleased", "perfect"]) else ABSTAIN


@labeling_function()
def broke(x) -> int:
    return NEGATIVE if _has(x, ["broke", "broken", "stopped", "never worked", "faulty"]) else ABSTAIN


@labeling_function()
def waste(x) -> int:
    return NEGATIVE if _has(x, ["waste", "worst", "do not buy", "not worth"]) else ABSTAIN


@labeling_function()
def poor_bad(x) -> int:
    return NEGATIVE if _has(x, ["poor", "bad", "terrible", "awful", "horrible", "cheap"]) else ABSTAIN


@labeling_function()
def returned(x) -> int:
    return NEGATIVE if _has(x, ["return", "refund", "leak"]) else ABSTAIN


@labeling_function()
def not_negation(x) -> int:
    return NEGATIVE if _has(x, ["not "]) else ABSTAIN
