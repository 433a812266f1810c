"""Palette PNG IO and atomic writes of the evaluation."""
import os

import numpy as np
import pytest
from PIL import Image

from eval.davis_data import Sequence, first_annotation
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


def write_p_png(path, indices, palette_rgb=None):
    im = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    flat = [0] * 768
    for k, rgb in (palette_rgb or {}).items():
        flat[3 * k:3 * k + 3] = rgb
    im.putpalette(flat)
    im.save(path)


def test_first_annotation_counts_objects_by_the_highest_id_without_void(tmp_path):
    """Kills D2 (objects counted as distinct ids). Official DAVIS: n = max id of the first mask, void
    (255) excluded: ids {0, 1, 3} -> 3 objects; {0, 2, 255} -> 2."""
    for ids, n in (([0, 1, 3], 3), ([0, 2, 255], 2)):
        path = str(tmp_path / f"{n}.png")
        write_p_png(path, np.array([ids, ids], np.uint8))
        assert first_annotation(Sequence("s", [], [path], (2, 3)))[2] == n


def test_read_indexed_png_keeps_the_files_own_palette(tmp_path):
    """Kills D4 (the DAVIS default palette always returned, so results lose the dataset's colours)."""
    path = str(tmp_path / "a.png")
    write_p_png(path, np.array([[0, 1]], np.uint8), {1: [10, 20, 30]})
    indices, palette = read_indexed_png(path)
    np.testing.assert_array_equal(indices, [[0, 1]])
    np.testing.assert_array_equal(palette[3:6], [10, 20, 30])
