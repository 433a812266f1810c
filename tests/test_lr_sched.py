"""util.lr_sched: linear warm-up, then half-cosine decay to min_lr, in fractional epochs (MAE's schedule)."""
import math

import pytest

from util.lr_sched import lr_at


def test_lr_schedule_warmup_then_half_cosine():
    assert lr_at(0.5, 1.0, 0.0, 1, 3) == pytest.approx(0.5)
    assert lr_at(1.5, 1.0, 0.0, 1, 3) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(3.0, 1.0, 0.1, 1, 3) == pytest.approx(0.1)
