"""Palette PNG IO and atomic writes of the evaluation."""
import os

import numpy as np
import pytest
from PIL import Image

from eval.files import (InputError, atomic_path, default_palette, list_files, read_indexed_png, write_csv,
                        write_indexed_png)


def test_default_palette_is_the_davis_one():
    palette = default_palette().reshape(-1, 3)
    assert palette[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert palette[255].tolist() == [224, 224, 192]


def test_indexed_png_round_trip(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_indexed_png(str(tmp_path / "a.png"), labels, default_palette())
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "P"
    back, palette = read_indexed_png(str(tmp_path / "a.png"))
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(palette, default_palette())
    Image.fromarray(labels, mode="L").save(tmp_path / "grey.png")  # no palette of its own: DAVIS's
    back, palette = read_indexed_png(str(tmp_path / "grey.png"))
    np.testing.assert_array_equal(back, labels)
    np.testing.assert_array_equal(palette, default_palette())
    Image.new("RGB", (4, 3)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="rgb.png: not an indexed PNG"):
        read_indexed_png(str(tmp_path / "rgb.png"))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "scores.csv")
    write_csv(path, ["a", "b"], [[0.5, "x"]])
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert open(path).read() == "a,b\n0.500,x\n"
    assert os.listdir(tmp_path) == ["scores.csv"]


def test_list_files_errors(tmp_path):
    with pytest.raises(InputError, match="missing: no such folder"):
        list_files(str(tmp_path / "missing"), ".png")
    with pytest.raises(InputError, match=r"no \*.png annotations"):
        list_files(str(tmp_path), ".png", "annotations")
