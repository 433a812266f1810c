import numpy as np
import pytest
import torch

from datasets.synthetic import coordinate_frame
from conftest import hand_normalised
from datasets.transforms import (IMAGENET_MEAN, crop_resize, denormalize, paired_crop,
                                 random_resized_box, to_tensor, to_uint8_tensor)


def test_random_resized_box_in_bounds_and_ranges():
    rng = np.random.default_rng(0)
    for _ in range(500):
        y, x, h, w = random_resized_box(rng, 120, 160)
        assert 0 <= y and y + h <= 120 and 0 <= x and x + w <= 160
        assert 0.5 - 0.03 <= h * w / (120 * 160) <= 1.0
        assert 3 / 4 - 0.03 <= w / h <= 4 / 3 + 0.03


def test_random_resized_box_fallback_on_extreme_shape():
    y, x, h, w = random_resized_box(np.random.default_rng(0), 10, 1000)
    assert (h, w) == (10, 13) and 0 <= x <= 1000 - w and y == 0


def test_crop_resize_shape_and_flip():
    img = coordinate_frame(0, (100, 120))
    out = crop_resize(img, (10, 20, 50, 60), 32)
    flipped = crop_resize(img, (10, 20, 50, 60), 32, flip=True)
    assert out.shape == (32, 32, 3)
    np.testing.assert_array_equal(flipped, out[:, ::-1])
    assert out[0, 0, 0] < out[0, -1, 0]  # x grows to the right unless flipped


def test_crop_resize_averages_only_when_shrinking_2x_or_more():
    """Mild shrinks are bilinear (cheap, and every input pixel still reaches the output); 2x or more
    averages areas, so a fine stripe pattern does not alias into the output."""
    import cv2

    stripes = np.zeros((256, 256, 3), np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: their mean is 127.5
    mild = crop_resize(stripes, (0, 0, 240, 240), 224)
    np.testing.assert_array_equal(mild, cv2.resize(stripes[:240, :240], (224, 224), interpolation=cv2.INTER_LINEAR))
    strong = crop_resize(stripes, (0, 0, 250, 250), 64)  # 3.9x
    np.testing.assert_array_equal(strong, cv2.resize(stripes[:250, :250], (64, 64), interpolation=cv2.INTER_AREA))
    assert np.abs(strong.astype(float) - 127.5).max() < 10  # averaged, not aliased
    aliased = cv2.resize(stripes[:250, :250], (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.abs(aliased.astype(float) - 127.5).max() > 100  # what bilinear would give
    one_side = crop_resize(stripes, (0, 0, 200, 256), 64)  # both sides shrink, one by 3x+: area
    np.testing.assert_array_equal(one_side, cv2.resize(stripes[:200], (64, 64), interpolation=cv2.INTER_AREA))


def test_paired_crop_shares_crop_and_flip():
    flips = set()
    for seed in range(20):
        v1, v2 = paired_crop(coordinate_frame(3), coordinate_frame(10),
                             np.random.default_rng(seed), 48)
        np.testing.assert_array_equal(v1[..., :2], v2[..., :2])  # same x, y everywhere
        assert (v1[..., 2] == 3).all() and (v2[..., 2] == 10).all()
        flips.add(bool(v1[0, 0, 0] > v1[0, -1, 0]))
    assert flips == {False, True}


def test_paired_crop_rejects_mismatched_frames():
    with pytest.raises(ValueError, match='differ in size'):
        paired_crop(coordinate_frame(0, (40, 50)), coordinate_frame(0, (40, 60)),
                    np.random.default_rng(0), 16)


def test_to_tensor_normalises_rgb_and_denormalize_inverts():
    views = np.zeros((2, 2, 8, 8, 3), np.uint8)
    views[..., 2] = 255  # red in BGR
    t = to_tensor(views)
    assert t.shape == (2, 2, 3, 8, 8) and t.dtype == torch.float32 and t.is_contiguous()
    back = denormalize(t)
    assert torch.allclose(back[:, :, 0], torch.ones(1))
    assert torch.allclose(back[:, :, 1:], torch.zeros(1), atol=1e-6)
    assert torch.allclose(to_tensor(np.zeros((4, 4, 3), np.uint8))[1],
                          torch.full((4, 4), -IMAGENET_MEAN[1] / 0.224))


@pytest.mark.parametrize('shape', [(2, 2, 24, 20, 3), (5, 7, 3), (3, 1, 1, 3)])
def test_to_uint8_tensor_reverses_channels_and_moves_them_first(shape):
    views = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    expected = torch.from_numpy(views.copy()).flip(-1).movedim(-1, -3)  # an independent path: torch's ops
    t = to_uint8_tensor(views)
    assert t.dtype == torch.uint8 and t.is_contiguous() and torch.equal(t, expected)


def test_to_uint8_tensor_rejects_views_without_three_channels():
    with pytest.raises(ValueError, match=r'\(\.\.\., H, W, 3\)'):
        to_uint8_tensor(np.zeros((2, 8, 8, 4), np.uint8))


def test_to_tensor_gives_rgb_normalised_by_hand_written_imagenet_statistics():
    """Kills T1/T2 (mean or std in BGR order): the constants are written out here, not imported."""
    bgr = np.zeros((1, 4, 4, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 30, 120, 250  # B, G, R
    out = to_tensor(bgr)[0, :, 0, 0]
    torch.testing.assert_close(out, hand_normalised((250, 120, 30)), rtol=1e-5, atol=1e-6)


def test_random_resized_box_aspect_ratio_is_log_uniform():
    """Kills T7 (aspect uniform in [3/4, 4/3] rather than its log): log-uniform is symmetric, so half
    the boxes are wider than tall; uniform gives (4/3 - 1) / (4/3 - 3/4) = 4/7 ~ 0.571 of them wider."""
    rng = np.random.default_rng(0)
    boxes = [random_resized_box(rng, 1000, 1000) for _ in range(4000)]
    wider = np.mean([w > h for _, _, h, w in boxes])
    assert abs(wider - 0.5) < 0.03  # binomial sd 0.008
