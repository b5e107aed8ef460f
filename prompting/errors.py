"""The one exception type of the prompting package."""


class PromptingError(ValueError):
    """A prompt template, chain, task or AMA run was set up wrongly; the message says what and how to fix it."""
