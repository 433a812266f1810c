"""JHMDB keypoint heatmaps, decoding and PCK; VIP mIoU; hand-worked values."""
import numpy as np
import pytest

from eval import keypoints, miou


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
