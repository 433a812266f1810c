"""Fine-tuning transforms: timm's RandAugment posterize mended for current Pillow."""
import argparse
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from timm.data import auto_augment

from util.datasets_cls import EpochKeyed, finetune_transform
import main_finetune
from util.datasets_cls import build_mixup


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


def test_epoch_keyed_items_draw_from_their_key_and_leave_the_callers_streams():
    class Draws:  # an "image" made of what a transform would draw from each generator
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return (i, random.random(), float(np.random.rand()), float(torch.rand(())))

    keyed = EpochKeyed(Draws(), seed=7)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    first = keyed[(2, 1)]
    after = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    assert after == (random.random(), float(np.random.rand()), float(torch.rand(())))  # the caller's untouched
    random.seed(5)  # other global states, another seed of the caller: the same item
    assert keyed[(2, 1)] == first
    assert keyed[(3, 1)] != first and keyed[(2, 2)][1:] != first[1:]  # another epoch, another index
    assert EpochKeyed(Draws(), seed=8)[(2, 1)] != first
    assert len(keyed) == 3


def test_no_auto_augment_and_an_unknown_policy():
    names = [type(t).__name__ for t in finetune_transform(_args("none")).transforms]
    assert "RandAugment" not in names and names == [type(t).__name__ for t in finetune_transform(_args("")).transforms]
    with pytest.raises(ValueError, match="--aa rund-m9: not an auto-augment policy"):
        finetune_transform(_args("rund-m9"))


def mixup_args(**kw):
    parser = argparse.ArgumentParser(parents=[main_finetune.get_args_parser()])
    args = parser.parse_args([])
    args.nb_classes = 10
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_mixup_probability_and_switch_are_not_swapped():
    """Kills FT1. mixup_prob 1, switch 0, mixup and cutmix on: every batch is mixed (never left
    alone) and always by mixup, so every pixel is a blend lam * x + (1 - lam) * x.flip(0)."""
    fn = build_mixup(mixup_args(mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.0))
    np.random.seed(0)
    for _ in range(5):
        x = torch.rand(4, 3, 8, 8)
        mixed, target = fn(x.clone(), torch.tensor([0, 1, 2, 3]))
        # target[0] = lam * smooth(0) + (1 - lam) * smooth(3), smooth(k) = 0.01 + 0.9 * onehot(k)
        lam = (float(target[0, 0]) - 0.01) / 0.9
        assert not torch.allclose(mixed, x)
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0), rtol=1e-5, atol=1e-5)


def test_mixup_targets_carry_label_smoothing():
    """Kills FT3. Smoothing 0.1 over 10 classes, no mixing (mixup_prob 0): off 0.1 / 10 = 0.01,
    on 1 - 0.1 + 0.01 = 0.91."""
    fn = build_mixup(mixup_args(mixup=0.8, mixup_prob=0.0, smoothing=0.1))
    _, target = fn(torch.rand(2, 3, 8, 8), torch.tensor([3, 7]))
    expected = torch.full((2, 10), 0.01)
    expected[0, 3] = expected[1, 7] = 0.91
    torch.testing.assert_close(target, expected)


def _folder_with(tmp_path, bad_bytes):
    """A train/ folder of 4 images whose first one is replaced by bad_bytes -> (ImageFolder, its index)."""
    from torchvision import transforms

    from datasets.synthetic import make_image_folder
    from util.datasets_cls import image_folder
    paths = make_image_folder(str(tmp_path / "train"), 4, size=(32, 40))
    data = open(paths[0], "rb").read()
    open(paths[0], "wb").write(bad_bytes(data))
    folder = image_folder(str(tmp_path), "train", transforms.ToTensor())
    return folder, [p for p, _ in folder.samples].index(paths[0]), paths[0]


@pytest.mark.parametrize("bad_bytes", [lambda data: b"", lambda data: data[:300]], ids=["empty", "cut"])
def test_an_unreadable_training_image_is_replaced_by_the_next_and_logged_once(tmp_path, caplog, bad_bytes):
    folder, i, path = _folder_with(tmp_path, bad_bytes)
    keyed = EpochKeyed(folder, seed=0)
    with caplog.at_level("WARNING", logger="siammae"):
        first, second = keyed[(0, i)], keyed[(1, i)]
    for x, y in (first, second):
        torch.testing.assert_close(x, folder[i + 1][0])
        assert y == folder[i + 1][1]
    assert caplog.text.count(f"skipped: {path}: not a readable image") == 1


def test_an_unreadable_image_read_by_a_loader_worker_ends_the_run_in_one_line(tmp_path, monkeypatch):
    from util.datasets_cls import UnreadableImage
    from util.optim import run_script
    folder, _, path = _folder_with(tmp_path, lambda data: data[:300])

    def main(args):
        list(torch.utils.data.DataLoader(folder, batch_size=2, num_workers=1))  # as the val loader reads

    def get_args_parser():
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--output_dir", default=str(tmp_path / "out"))
        return parser
    with pytest.raises(UnreadableImage) as raised:
        main(None)
    assert "Original Traceback" in str(raised.value)  # torch appended the worker's traceback to the message
    monkeypatch.setattr("sys.argv", ["x"])
    with pytest.raises(SystemExit) as e:
        run_script("t", get_args_parser, main)
    assert e.value.code == f"error: {path}: not a readable image (Truncated File Read)"
