"""The one exception type of the engine package."""


class EngineError(ValueError):
    """Raised for invalid requests, models or engine settings; the message says how to fix it."""
