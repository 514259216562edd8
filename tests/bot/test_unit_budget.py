"""bot.handlers.budget: the bytes in flight are reserved, refused past the limit (nothing reserved then), released."""
import pytest

from bot.handlers.budget import BytesInFlight
from bot.inference.contract import Busy


def test_reserved_refused_past_the_limit_and_released():
    budget = BytesInFlight(100)
    with budget.hold(60):
        with pytest.raises(Busy, match="limit is 100"):
            with budget.hold(41):
                pass
        assert budget.held == 60
        with budget.hold(40):
            assert budget.held == 100
    assert budget.held == 0
    with pytest.raises(ValueError):  # released on the way out of an error too
        with budget.hold(100):
            raise ValueError("the decode failed")
    assert budget.held == 0
