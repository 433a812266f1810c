"""JHMDB keypoint heatmaps, decoding and PCK; VIP mIoU; hand-worked values."""
import numpy as np
import pytest

from eval import keypoints, miou
import argparse
import math
import scipy.io
import torch
from eval import cli, jhmdb_propagate


def test_pixel_grid_round_trip_and_cell_centres():
    # a 320-pixel frame on a 20-cell grid: cell 0 is centred on pixel 7.5, cell 19 on pixel 311.5
    xy = np.array([[7.5, 311.5], [0.0, 100.0]])
    grid = keypoints.pixels_to_grid(xy, (320, 320), (20, 20))
    np.testing.assert_allclose(grid[0], [0, 19])
    np.testing.assert_allclose(keypoints.grid_to_pixels(grid, (320, 320), (20, 20)), xy)


def test_heatmaps_decode_back_to_the_joints():
    joints = np.array([[2.0, 3.0], [6.5, 1.0], [0.0, 7.0]])  # grid (x, y); the second between two cells
    maps = keypoints.heatmaps(np.vstack([joints, [[50.0, 2.0]]]), (8, 10))  # the last joint is off the grid
    assert maps.shape == (8, 10, 5)
    assert maps[3, 2, 1] == 1 and maps[..., 4].sum() == 0
    assert maps[..., 0].sum() == (maps[..., 1:].sum(-1) == 0).sum()
    decoded = keypoints.decode(maps)
    # the harness's top-3 mean leans a little towards the two runner-up cells
    np.testing.assert_allclose(decoded[:3], joints, atol=0.15)
    np.testing.assert_allclose(keypoints.decode(maps, topk=1)[:2], [[2, 3], [6, 1]])
    np.testing.assert_array_equal(decoded[3], [-1, -1])


def test_pck_uses_the_box_of_the_true_joints():
    gt = np.array([[[0.0, 0.0], [30.0, 40.0], [30.0, 0.0]]])  # box diagonal 50 -> reference 30
    pred = gt + np.array([[[0.0, 2.9], [3.1, 0.0], [0.0, 6.0]]])
    errors = keypoints.normalised_errors(pred, gt)
    np.testing.assert_allclose(errors, [[2.9 / 30, 3.1 / 30, 6 / 30]])
    assert keypoints.pck(errors, 0.1) == pytest.approx(1 / 3)
    assert keypoints.pck(errors, 0.2) == pytest.approx(1.0)
    pred[0, 2] = -1  # a vanished joint is left out, as in the public harness
    assert keypoints.pck(keypoints.normalised_errors(pred, gt), 0.1) == pytest.approx(0.5)


def test_pck_box_leaves_out_vanished_joints():
    """As CRW's eval_pck: the reference box spans only the joints that have a prediction, so a vanished
    joint far from the others cannot enlarge it (and make PCK lenient)."""
    gt = np.array([[[0.0, 0.0], [30.0, 40.0], [300.0, 400.0]],  # the far joint vanished: box diagonal 50
                   [[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]])  # every joint vanished: all NaN, no warning
    pred = gt + 2.0
    pred[0, 2] = pred[1] = -1
    with np.errstate(all="raise"):
        errors = keypoints.normalised_errors(pred, gt)
    np.testing.assert_allclose(errors[0, :2], np.hypot(2, 2) / 30)
    assert np.isnan(errors[0, 2]) and np.isnan(errors[1]).all()


def test_mean_iou_from_one_confusion_matrix():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 3, 3]])
    matrix = miou.confusion(pred, gt, 4)
    assert matrix.sum() == 6  # void pixels ignored
    ious = miou.iou_per_class(matrix)
    np.testing.assert_allclose(ious[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(ious[3])  # in neither truth nor prediction once void is dropped
    assert miou.mean_iou(matrix) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert np.isnan(miou.mean_iou(np.zeros((4, 4), np.int64)))


def test_decode_is_the_weighted_mean_of_the_three_strongest_cells():
    """Kills K2 (top-2 instead of CRW's top-3). Cells 1.0 at (x0,y0), 0.5 at (x1,y0) and (x0,y1),
    0.25 at (x1,y1): top-3 mean x = (0*1 + 1*.5 + 0*.5) / 2 = 0.25, y likewise."""
    soft = torch.zeros(2, 2, 2)  # (h, w, 1 background + 1 joint)
    soft[..., 1] = torch.tensor([[1.0, 0.5], [0.5, 0.25]])
    np.testing.assert_allclose(keypoints.decode(soft), [[0.25, 0.25]], atol=1e-6)


def test_pck_is_per_joint_then_mean_over_joints():
    """Kills K3 (pooled over all (frame, joint) entries). Joint 0 visible in 1 frame and correct
    (1/1); joint 1 correct in 1 of 3 frames (1/3): mean 2/3, where pooling gives 2/4."""
    errors = np.array([[0.05, 0.5], [np.nan, 0.5], [np.nan, 0.05]])
    assert keypoints.pck(errors, 0.1) == pytest.approx(2 / 3)


def test_heatmap_gaussian_is_cut_at_three_sigma():
    """Kills K7 (cut at 1 sigma). sigma 1, joint on cell (5, 5): distance 2 -> exp(-2), distance 3
    (d2 = 9 = (3 sigma)^2) -> exp(-4.5), distance sqrt(10) -> 0."""
    maps = keypoints.heatmaps(np.array([[5.0, 5.0]]), (11, 11), sigma=1.0)[..., 1].numpy()
    assert maps[5, 5] == pytest.approx(1.0)
    assert maps[5, 7] == pytest.approx(math.exp(-2), rel=1e-6)
    assert maps[8, 5] == pytest.approx(math.exp(-4.5), rel=1e-6)
    assert maps[8, 6] == 0  # d2 = 10 > 9


def test_read_joints_turns_1_based_pos_img_into_0_based_xy(tmp_path):
    """Kills K5 (the -1 of MATLAB's 1-based pixels dropped). pos_img (2, J, T): row 0 x, row 1 y."""
    pos = np.zeros((2, 2, 3))
    pos[0], pos[1] = 11.0, 21.0  # every joint, every frame at 1-based (11, 21)
    pos[0, 1, 2] = 5.0  # joint 1 in frame 2 at x = 5
    path = str(tmp_path / "joint_positions.mat")
    scipy.io.savemat(path, {"pos_img": pos})
    joints = jhmdb_propagate.read_joints(path)
    assert joints.shape == (3, 2, 2)  # (T, J, xy)
    np.testing.assert_array_equal(joints[0, 0], [10, 20])
    np.testing.assert_array_equal(joints[2, 1], [4, 20])


def test_jhmdb_scores_every_frame_but_the_first(tmp_path, monkeypatch):
    """Kills K6 (frame 0, which is the ground truth itself, scored too). Two joints at (0, 0) and
    (30, 40): reference 0.6 * 50 = 30 px. Frames 1 and 2 are predicted 12 px off (0.4 > 0.2): PCK 0 at
    both thresholds; counting frame 0 (exact) would give 1/3."""
    joints = np.array([[[0.0, 0.0], [30.0, 40.0]]] * 3)  # (T, J, 2)
    pred = joints.copy()
    pred[1:, :, 0] += 12.0
    monkeypatch.setattr(jhmdb_propagate, "read_video", lambda d, m: (["f0", "f1", "f2"], joints))
    monkeypatch.setattr(cli, "extractor_from_args", lambda args: None)
    monkeypatch.setattr(jhmdb_propagate, "propagate_video", lambda ex, frames, j, args: pred)
    listing = tmp_path / "list.txt"
    listing.write_text("walk/clipA walk/clipA/joint_positions.mat\n")
    parser = argparse.ArgumentParser(parents=[jhmdb_propagate.get_args_parser()])
    jhmdb_propagate.main(parser.parse_args(["--filelist", str(listing), "--output_dir", str(tmp_path / "out")]))
    header, values = (tmp_path / "out" / "jhmdb_pck.csv").read_text().splitlines()
    assert header == "PCK@0.1,PCK@0.2"
    assert [float(v) for v in values.split(",")] == [0.0, 0.0]


def test_class_predicted_but_absent_from_truth_scores_iou_zero():
    """Kills M1 (NaN, i.e. skipped, for a class absent from the truth). Truth all class 0, prediction
    half class 1: IoU_0 = 2/4, IoU_1 = 0/2, mIoU = 0.25 (not 0.5)."""
    matrix = miou.confusion(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]), 2)
    np.testing.assert_allclose(miou.iou_per_class(matrix), [0.5, 0.0])
    assert miou.mean_iou(matrix) == pytest.approx(0.25)
