"""The one exception type of the label-model package."""


class LabelModelError(ValueError):
    """Raised for invalid label matrices, gold labels or model use; the message says how to fix it."""
