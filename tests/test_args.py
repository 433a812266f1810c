"""util.args: the learning rate from the base rate and the effective batch."""
import argparse

import pytest

from util.args import resolve_lr


def test_lr_follows_the_effective_batch_with_accumulation():
    args = argparse.Namespace(batch_size=4, accum_iter=2, lr=None, blr=0.1)
    assert resolve_lr(args, 2) == 16 and args.lr == pytest.approx(0.1 * 16 / 256)
