"""Keyword labeling functions for LegalBench ``overruling`` (0 = No, 1 = Yes: the sentence overrules a case).

Used by examples/overruling.yaml; the Embroid step smooths each LF's votes over MiniLM neighbours, which
lets a keyword LF vote on sentences that say the same thing in other words.
"""

from labelmodel import ABSTAIN, labeling_function

NO, YES = 0, 1


def keywords(name: str, words: list[str], label: int):
    @labeling_function(name=name)
    def lf(x) -> int:
        text = x.text.lower()
        return label if any(w in text for w in words) else ABSTAIN

    return lf


LFS = [
    keywords("overrule", ["overrule", "overruling"], YES),
    keywords("disapprove", ["disapprove", "abrogate", "no longer good law", "recede from"], YES),
    keywords("inconsistent", ["inconsistent", "to the extent"], YES),
    keywords("cites", ["see ", "cf.", "accord"], NO),
    keywords("holds", ["we hold", "held that", "court held"], NO),
]
