"""Review of stored runs: bad input to a stored trace ends in one FleetsimError, as a frame handed to `simulate` does."""

from __future__ import annotations

import pandas as pd
import pytest

from sim.errors import FleetsimError
from sim.run import store


@pytest.mark.parametrize(
    "window",
    [
        {"arrival_at_s": [0.0], "prompt_tokens": ["x"], "output_tokens": [3]},
        {"arrival_at_s": ["soon"], "prompt_tokens": [5], "output_tokens": [3]},
        {"arrival_at_s": [0.0], "prompt_tokens": [5], "output_tokens": [object()]},
    ],
)
def test_a_stored_trace_of_values_that_are_not_numbers_is_refused(window, tmp_path):
    with pytest.raises(FleetsimError, match="must be numbers"):
        store.stored_trace(iter([pd.DataFrame(window)]), tmp_path / "trace")
