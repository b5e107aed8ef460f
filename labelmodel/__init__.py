"""Label matrices, labeling functions, LF analysis and label models (floor 1)."""

from labelmodel.base import LabelModelBase, probs_to_preds
from labelmodel.errors import LabelModelError
from labelmodel.matrix import ABSTAIN, LabelMatrix, as_label_matrix
from labelmodel.metrics import score_predictions
from labelmodel.model import DawidSkene, MajorityVote, MatrixCompletion, Triplet, WeightedMajorityVote
from labelmodel.model.auto import LabelModel

__all__ = [
    "ABSTAIN",
    "DawidSkene",
    "LabelMatrix",
    "LabelModel",
    "LabelModelBase",
    "LabelModelError",
    "MajorityVote",
    "MatrixCompletion",
    "Triplet",
    "WeightedMajorityVote",
    "as_label_matrix",
    "probs_to_preds",
    "score_predictions",
]
