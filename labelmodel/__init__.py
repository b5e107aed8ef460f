"""Label matrices, labeling functions, LF analysis and label models (floor 1)."""

from labelmodel.errors import LabelModelError

__all__ = ["LabelModelError"]
