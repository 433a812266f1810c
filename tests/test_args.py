"""util.args: the learning rate from the base rate and the effective batch; bounded numeric options."""
import argparse

import pytest

from util.args import bounded, resolve_lr


def test_lr_follows_the_effective_batch_with_accumulation():
    args = argparse.Namespace(batch_size=4, accum_iter=2, lr=None, blr=0.1)
    assert resolve_lr(args, 2) == 16 and args.lr == pytest.approx(0.1 * 16 / 256)


@pytest.mark.parametrize("script, argv, message", [
    ("main_pretrain_siam", ["--repeated_sampling", "0"], "argument --repeated_sampling: must be at least 1, got 0"),
    ("main_pretrain_siam", ["--accum_iter", "0"], "argument --accum_iter: must be at least 1, got 0"),
    ("main_pretrain_siam", ["--save_every", "-1"], "argument --save_every: must be at least 0, got -1"),
    ("main_pretrain_siam", ["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    ("main_finetune", ["--batch_size", "-4"], "argument --batch_size: must be at least 1, got -4"),
    ("eval.davis_propagate", ["--davis_path", "d", "--short_side", "0"], "argument --short_side: must be at least 1, got 0"),
    ("datasets.extract_frames", ["--src", "a", "--dst", "b", "--quality", "200"],
     "argument --quality: must be at least 1 and at most 100, got 200"),
])
def test_out_of_range_numbers_are_one_line_usage_errors(script, argv, message, capsys):
    import importlib
    module = importlib.import_module(script)
    parser = module.get_args_parser()
    parser = parser if parser.add_help else argparse.ArgumentParser(parents=[parser])
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: " + message)


def test_bounded_accepts_its_bounds_and_floats():
    assert bounded(1)("1") == 1 and bounded(0, 100)("100") == 100
    assert bounded(0, kind=float)("0.5") == 0.5
    with pytest.raises(argparse.ArgumentTypeError):
        bounded(0, kind=float)("-0.1")
