"""Label models with one estimator API."""

from labelmodel.model.dawid_skene import DawidSkene
from labelmodel.model.majority import MajorityVote, WeightedMajorityVote
from labelmodel.model.matrix_completion import MatrixCompletion
from labelmodel.model.triplet import Triplet

__all__ = ["DawidSkene", "MajorityVote", "MatrixCompletion", "Triplet", "WeightedMajorityVote"]
