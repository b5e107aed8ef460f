"""The one exception type of the orchestra package."""


class OrchestraError(ValueError):
    """Bad input to a pipeline, a YAML file, a data file or a job directory.

    The message says what was wrong and how to fix it. The CLI maps it to exit code 2; any other exception
    is a runtime failure (exit code 1).
    """
