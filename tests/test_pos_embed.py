import math

import numpy as np
import torch

from util.pos_embed import get_2d_sincos_pos_embed, resize_pos_embed


def test_sincos_values_and_layout():
    d, h, w = 16, 3, 5
    emb = get_2d_sincos_pos_embed(d, (h, w), cls_token=True)
    assert emb.shape == (1 + h * w, d)
    assert np.all(emb[0] == 0)
    row, col = 2, 3
    e = emb[1 + row * w + col]
    freqs = [1 / 10000 ** (i / 4) for i in range(4)]  # d/4 frequencies per half
    expect_x = [math.sin(col * f) for f in freqs] + [math.cos(col * f) for f in freqs]
    expect_y = [math.sin(row * f) for f in freqs] + [math.cos(row * f) for f in freqs]
    np.testing.assert_allclose(e[:8], expect_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(e[8:], expect_y, rtol=1e-6, atol=1e-6)


def test_resize_pos_embed():
    table = torch.from_numpy(get_2d_sincos_pos_embed(32, 4, cls_token=True)).unsqueeze(0)
    assert resize_pos_embed(table, (4, 4)) is table
    out = resize_pos_embed(table, (8, 6))
    assert out.shape == (1, 1 + 48, 32)
    assert torch.equal(out[:, 0], table[:, 0])
    # smooth table: resampling keeps values close to the original's range
    assert out.abs().max() <= 1.2


def test_resized_pos_embed_keeps_the_row_code_of_each_row():
    table = torch.from_numpy(get_2d_sincos_pos_embed(32, 4, cls_token=True))[None]
    out = resize_pos_embed(table, (4, 8))[0, 1:].reshape(4, 8, 32)  # rows not resampled
    src = table[0, 1:].reshape(4, 4, 32)
    for r in range(4):  # second half of the channels encodes the row: unchanged and constant along the row
        torch.testing.assert_close(out[r, :, 16:], src[r, :1, 16:].expand(8, 16), rtol=0, atol=1e-5)
