"""Label matrices, labeling functions, LF analysis and label models (floor 1)."""

from labelmodel.analysis import LFAnalysis
from labelmodel.apply import LFApplier, PandasLFApplier
from labelmodel.base import LabelModelBase, probs_to_preds
from labelmodel.errors import LabelModelError
from labelmodel.lf import LabelingFunction, Record, labeling_function
from labelmodel.matrix import ABSTAIN, LabelMatrix, as_label_matrix
from labelmodel.metrics import score_predictions
from labelmodel.model import DawidSkene, MajorityVote, MatrixCompletion, Triplet, WeightedMajorityVote
from labelmodel.model.auto import LabelModel
from labelmodel.structure import (
    DependencyStructure,
    dependency_components,
    learn_dependencies,
    learn_dependency_structure,
)

__all__ = [
    "ABSTAIN",
    "DawidSkene",
    "DependencyStructure",
    "LFAnalysis",
    "LFApplier",
    "LabelMatrix",
    "LabelModel",
    "LabelModelBase",
    "LabelModelError",
    "LabelingFunction",
    "MajorityVote",
    "MatrixCompletion",
    "PandasLFApplier",
    "Record",
    "Triplet",
    "WeightedMajorityVote",
    "as_label_matrix",
    "dependency_components",
    "labeling_function",
    "learn_dependencies",
    "learn_dependency_structure",
    "probs_to_preds",
    "score_predictions",
]
