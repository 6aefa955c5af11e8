"""E-NFE: the expected network calls per sequence with the cache."""

import pytest

from radd_cli.sampling import (
    expected_nfe,
)
from tests.sampling.oracle_draws import LOGLINEAR


def test_e_nfe_reproduces_the_papers_numbers():
    for steps, value in [(512, 442.8), (1024, 647.5), (2048, 806.0), (4096, 906.1)]:
        assert expected_nfe(LOGLINEAR, steps, 1024) == pytest.approx(value, abs=0.1)
