"""DAVIS J/F against hand-worked masks, the official statistics, CSV format, and bad results."""
import os
import shutil

import numpy as np
import pytest

from eval import davis_metrics as dm
from eval.davis_data import load_sequence, read_sequence_names
from eval.files import InputError, read_indexed_png, write_indexed_png
from eval.synthetic import write_davis_set
from types import SimpleNamespace


def half_plane(top, size=100):
    """Rows >= top set: its boundary (official convention) is the single row top - 1."""
    m = np.zeros((size, size), bool)
    m[top:] = True
    return m


def test_empty_and_perfect_masks():
    empty = np.zeros((40, 60), bool)
    blob = empty.copy()
    blob[10:30, 20:50] = True
    assert dm.region_similarity(empty, empty) == 1.0
    assert dm.boundary_f(empty, empty) == 1.0
    assert dm.region_similarity(blob, blob) == 1.0
    assert dm.boundary_f(blob, blob) == 1.0
    # one side empty: J = 0, F = 0 (precision or recall is 0)
    assert dm.region_similarity(empty, blob) == 0.0
    assert dm.boundary_f(empty, blob) == 0.0
    assert dm.boundary_f(blob, empty) == 0.0


def test_boundary_map_of_a_half_plane_is_one_row():
    b = dm.boundary_map(half_plane(50))
    assert b[49].all() and b.sum() == 100


def test_boundary_tolerance_is_ceil_of_diagonal_fraction():
    assert dm.boundary_tolerance((100, 100)) == 2  # ceil(0.008 * 141.4)
    assert dm.boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.6)


@pytest.mark.parametrize("shift, f", [(1, 1.0), (2, 1.0), (3, 0.0), (10, 0.0)])
def test_shift_within_and_beyond_the_tolerance(shift, f):
    gt, pred = half_plane(50), half_plane(50 + shift)
    assert dm.boundary_f(pred, gt) == f
    assert dm.region_similarity(pred, gt) == pytest.approx((50 - shift) / 50)


def test_partial_boundary_match():
    # truth: two horizontal edges (a band); prediction moves only the lower one far away
    gt = np.zeros((100, 100), bool)
    gt[30:60] = True
    pred = np.zeros((100, 100), bool)
    pred[30:80] = True
    # boundaries: truth rows 29 and 59, prediction rows 29 and 79 -> half of each matches
    assert dm.boundary_f(pred, gt) == pytest.approx(0.5)
    assert dm.region_similarity(pred, gt) == pytest.approx(30 / 50)


def test_statistics_mean_recall_decay():
    mean, recall, decay = dm.statistics([1, 1, 1, 1, 0, 0, 0, 0])
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)  # bins [0:3] and [5:8]
    # 3 frames: bins [0:2] and [2:3] (the official bins overlap on short sequences)
    assert dm.statistics([0.6, 0.4, 0.9]) == pytest.approx((1.9 / 3, 2 / 3, 0.5 - 0.9))


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("davis"))
    write_davis_set(root, n_sequences=2, n_frames=6, height=48, width=64, n_objects=2, seed=1)
    return root


def copy_truth(davis, out):
    for name in read_sequence_names(davis):
        shutil.copytree(os.path.join(davis, "Annotations", "480p", name), os.path.join(out, name))
    return [load_sequence(davis, name) for name in read_sequence_names(davis)]


def test_truth_as_results_scores_one_and_writes_official_csvs(davis, tmp_path):
    sequences = copy_truth(davis, str(tmp_path))
    global_scores, per_object = dm.evaluate(sequences, str(tmp_path))
    dm.write_results(str(tmp_path), global_scores, per_object)
    with open(tmp_path / "global_results-val.csv") as f:
        assert f.read() == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay\n" \
                           "1.000,1.000,1.000,0.000,1.000,1.000,0.000\n"
    with open(tmp_path / "per-sequence_results-val.csv") as f:
        lines = f.read().splitlines()
    assert lines[0] == "Sequence,J-Mean,F-Mean"
    assert lines[1:] == [f"synthetic-0{s}_{k},1.000,1.000" for s in (0, 1) for k in (1, 2)]
    assert "Global results for val" in dm.format_table(global_scores, per_object)


def test_missing_object_scores_zero_for_it(davis, tmp_path):
    sequences = copy_truth(davis, str(tmp_path))
    seq = sequences[0]
    for path in seq.annotations:
        out = os.path.join(str(tmp_path), seq.name, os.path.basename(path))
        labels, palette = read_indexed_png(out)
        write_indexed_png(out, np.where(labels == 2, 0, labels), palette)
    j, f = dm.evaluate_sequence(seq, str(tmp_path))
    assert j.shape == (2, len(seq.frames) - 2)
    assert (j[0] == 1).all() and (f[0] == 1).all()
    assert (j[1] == 0).all() and (f[1] == 0).all()


def test_bad_results_name_the_file(davis, tmp_path):
    seq = copy_truth(davis, str(tmp_path))[0]
    bad = os.path.join(str(tmp_path), seq.name, "00002.png")
    labels, palette = read_indexed_png(bad)
    write_indexed_png(bad, np.where(labels == 1, 3, labels), palette)
    with pytest.raises(InputError, match=r"00002\.png: index 3 is higher than the 2 objects"):
        dm.evaluate_sequence(seq, str(tmp_path))
    write_indexed_png(bad, labels[:-1], palette)
    with pytest.raises(InputError, match=r"00002\.png: size \(47, 64\) differs"):
        dm.evaluate_sequence(seq, str(tmp_path))
    os.remove(bad)
    with pytest.raises(InputError, match=r"00002\.png: missing result PNG"):
        dm.evaluate_sequence(seq, str(tmp_path))


def test_j_and_f_mean_is_the_mean_of_j_and_f(monkeypatch):
    j = np.array([[1.0, 1.0, 1.0], [0.2, 0.4, 0.6]])
    f = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    monkeypatch.setattr(dm, "evaluate_sequence", lambda seq, d: (j, f))
    scores, _ = dm.evaluate([SimpleNamespace(name="s")], "unused")
    assert scores["J-Mean"] == pytest.approx((1 + 0.4) / 2) and scores["F-Mean"] == pytest.approx(0.5)
    assert scores["J&F-Mean"] == pytest.approx((0.7 + 0.5) / 2)
