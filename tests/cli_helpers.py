"""Checks shared by the CLI tests."""


def assert_clean_error(result, message: str, exit_code: int | None = None) -> None:
    """A one-line error with `message`, a non-zero exit, and no exception escaping the command."""
    assert result.exit_code != 0 if exit_code is None else result.exit_code == exit_code, result.output
    assert message in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a traceback
    assert len(result.output.strip().splitlines()) == 1, result.output
