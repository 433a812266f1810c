import numpy as np

from datasets.crops import global_local_boxes, global_local_crop
from datasets.synthetic import coordinate_frame


def test_local_box_inside_global_box():
    rng = np.random.default_rng(0)
    for _ in range(500):
        (gy, gx, gh, gw), (ly, lx, lh, lw) = global_local_boxes(rng, 200, 250)
        assert 0 <= gy and gy + gh <= 200 and 0 <= gx and gx + gw <= 250
        assert gy <= ly and ly + lh <= gy + gh and gx <= lx and lx + lw <= gx + gw
        assert 0.3 - 0.05 <= lh * lw / (gh * gw) <= 0.6 + 0.05


def test_local_view_content_lies_inside_global_view():
    img = coordinate_frame(0, (200, 250))
    flips = set()
    for seed in range(30):
        g, loc = global_local_crop(img, np.random.default_rng(seed), 64)
        assert g.shape == loc.shape == (64, 64, 3)
        for c in (0, 1):  # x, y coordinates carried by the pixel values
            assert g[..., c].min() - 1 <= loc[..., c].min() and loc[..., c].max() <= g[..., c].max() + 1
        flips.add((bool(g[0, 0, 0] > g[0, -1, 0]), bool(loc[0, 0, 0] > loc[0, -1, 0])))
    assert len(flips) == 4  # independent flips
