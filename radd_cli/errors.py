"""The errors radd raises on purpose.

Every message is one line that says what was wrong and how to fix it; the CLI prints it and exits
non-zero without a traceback (set RADD_DEBUG=1 to see one).
"""


class RaddError(Exception):
    """A problem the user can fix: bad input, a missing file, an unreachable resource."""

    exit_code = 1


class ConfigError(RaddError):
    """A recipe, an override or an option value is invalid."""

    exit_code = 2

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        count = len(self.problems)
        if count == 1:
            message = self.problems[0]
        else:
            message = f"{count} problems: " + "; ".join(self.problems)
        super().__init__(message)


class CheckpointError(RaddError):
    """A model or checkpoint folder is missing, incomplete, or does not match the network."""


class DataError(RaddError):
    """A dataset or tokenizer cannot be read, or holds too little to use."""


class NonFiniteError(RaddError):
    """The model produced NaN or infinite values: its weights are broken."""


class TrainingError(RaddError):
    """Training cannot go on (for example, too many non-finite losses in a row)."""
