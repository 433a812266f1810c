"""Fine-tuning transforms: timm's RandAugment posterize mended for current Pillow."""
import argparse
import random

import numpy as np
import pytest
from PIL import Image, ImageOps
from timm.data import auto_augment

from util.datasets_cls import finetune_transform


def _args(aa):
    return argparse.Namespace(input_size=32, color_jitter=None, aa=aa, reprob=0.0, remode="pixel", recount=1)


def _posterize_ops(transform):
    posterize_levels = [f for name, f in auto_augment.LEVEL_TO_ARG.items() if name.startswith("Posterize")]
    return [op for t in transform.transforms for op in getattr(t, "ops", [])
            if isinstance(op, auto_augment.AugmentOp) and op.level_fn in posterize_levels]


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_timm_posterize_at_full_magnitude_fails_on_this_pillow():
    """The failure mended here: 'inc1' at magnitude 10 asks for 0 bits (if Pillow ever accepts it again,
    the mend is moot and this test says so)."""
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    with pytest.raises(ValueError):
        op(_image())


@pytest.mark.parametrize("magnitude, bits", [(10, 0), (5, 2), (0, 4)])
def test_finetune_randaugment_posterize_keeps_the_top_bits(magnitude, bits):
    ops = _posterize_ops(finetune_transform(_args(f"rand-m{magnitude}-mstd0-inc1")))
    assert len(ops) == 1
    ops[0].prob = 1.0
    img = _image()
    out = np.asarray(ops[0](img))
    mask = (0xFF << (8 - bits)) & 0xFF           # independent: bit arithmetic on the array
    np.testing.assert_array_equal(out, np.asarray(img) & mask)
    if bits:
        np.testing.assert_array_equal(out, np.asarray(ImageOps.posterize(img, bits)))


def test_finetune_transform_runs_randaugment_at_the_edge_of_its_range():
    """m9 + mstd0.5 (the MAE recipe) reaches magnitude 10; with magnitude 10 fixed every image passes."""
    random.seed(0)
    transform = finetune_transform(_args("rand-m10-n4-mstd0-inc1"))
    for op in _posterize_ops(transform):
        op.prob = 1.0
    for i in range(20):
        assert transform(_image()).shape == (3, 32, 32)
