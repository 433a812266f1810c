"""Label propagation: the chunked affinity equals the dense one; oracle features reproduce labels."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.propagation import (grid_to_labels, labels_to_grid, neighbourhood, propagate, propagate_frame,
                              rows_per_chunk)


def dense_frame(query, frames, labels, first, first_labels, topk, temperature, radius, restrict_first, window):
    """Reference: the whole (context, hw, hw) affinity at once, masked, top-k over all frames."""
    h, w, dim = query.shape
    feats = torch.cat([first[None], frames]).reshape(-1, h * w, dim)  # (C+1, hw, D)
    labs = torch.cat([first_labels[None], labels]).reshape(-1, first_labels.shape[-1])
    aff = torch.einsum("qd,cnd->qcn", query.reshape(-1, dim), feats)  # (hw, C+1, hw)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    near = torch.cdist(pos, pos) < radius if window == "circle" else torch.cdist(pos, pos, p=float("inf")) <= radius
    restricted = torch.ones(feats.shape[0], dtype=torch.bool)
    restricted[0] = restrict_first
    allowed = near[:, None, :] | ~restricted[None, :, None]
    aff = aff.masked_fill(~allowed, float("-inf")).flatten(1)
    vals, idx = aff.topk(topk, dim=1)
    return (F.softmax(vals / temperature, 1)[..., None] * labs[idx]).sum(1).reshape(h, w, -1)


def random_context(seed, h=7, w=9, dim=16, n_ctx=3, n_labels=4):
    g = torch.Generator().manual_seed(seed)
    def feats(*shape):
        return F.normalize(torch.randn(*shape, dim, generator=g), dim=-1)
    labels = torch.softmax(torch.randn(n_ctx, h, w, n_labels, generator=g) * 3, -1)
    first_labels = F.one_hot(torch.randint(0, n_labels, (h, w), generator=g), n_labels).float()
    return feats(h, w), feats(n_ctx, h, w), labels, feats(h, w), first_labels


@pytest.mark.parametrize("radius", [1, 2.5, 4, 100])
@pytest.mark.parametrize("restrict_first", [False, True])
@pytest.mark.parametrize("max_elems", [1, 2000, 2 ** 27])
@pytest.mark.parametrize("window", ["circle", "square"])
def test_chunked_equals_dense(radius, restrict_first, max_elems, window):
    query, frames, labels, first, first_labels = random_context(seed=int(radius * 10) + restrict_first)
    topk, temperature = 5, 0.1
    expected = dense_frame(query, frames, labels, first, first_labels, topk, temperature, radius, restrict_first,
                           window)
    dim, n_labels = query.shape[-1], labels.shape[-1]
    if restrict_first:
        local_feats, local_labels = torch.cat([first[None], frames]), torch.cat([first_labels[None], labels])
        global_feats, global_labels = torch.empty(0, dim), torch.empty(0, n_labels)
    else:
        local_feats, local_labels = frames, labels
        global_feats, global_labels = first.reshape(-1, dim), first_labels.reshape(-1, n_labels)
    got = propagate_frame(query, local_feats, local_labels, global_feats, global_labels, topk, temperature,
                          radius, max_elems, window)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_square_window_is_wider_than_the_circle_and_unknown_windows_are_refused():
    """At radius 2 the square keeps the corner offsets (2, 2) that the circle (distance < 2) drops."""
    circle = neighbourhood((0, 5), (0, 5), 5, 2.0, "cpu", "circle").reshape(5, 5, 5, 5)
    square = neighbourhood((0, 5), (0, 5), 5, 2.0, "cpu", "square").reshape(5, 5, 5, 5)
    assert square[2, 2].all() and not circle[2, 2, 0, 0] and not circle[2, 2, 4, 4]
    assert circle[2, 2].sum() == 9 and square[2, 2].sum() == 25 and square[0, 0].sum() == 9
    with pytest.raises(ValueError, match="window must be one of"):
        next(propagate(torch.zeros(2, 3, 3, 4), torch.zeros(3, 3, 2), window="diamond"))


def test_rows_per_chunk_respects_the_budget():
    h, w, reach = 60, 107, 19
    rows = rows_per_chunk(h, w, 20, reach, h * w, 2 ** 27)
    assert 1 <= rows < h
    assert rows * w * (20 * min(h, rows + 2 * reach) * w + h * w) <= 2 ** 27
    assert rows_per_chunk(h, w, 20, reach, h * w, 1) == 1


def test_first_frames_see_only_the_first_frame_and_a_growing_queue():
    # frame t's context: first frame + frames 1..t-1; a query matching only frame 0 gets its labels
    h, w, dim = 4, 5, 8
    feats = F.normalize(torch.randn(6, h, w, dim), dim=-1)
    labels0 = F.one_hot(torch.randint(0, 3, (h, w)), 3).float()
    outs = list(propagate(feats, labels0, topk=3, queue=2, radius=3))
    assert len(outs) == 5 and all(o.shape == (h, w, 3) for o in outs)
    assert all(torch.allclose(o.sum(-1), torch.ones(h, w)) for o in outs)


def position_features(h, w, offset=0, world_w=None):
    """One-hot features of the world position (row, col + offset): a camera panning by `offset`."""
    world_w = world_w or w
    cols = torch.arange(w) + offset
    index = torch.arange(h)[:, None] * world_w + cols[None, :]
    return F.one_hot(index, h * world_w).float()


def test_oracle_static_scene_reproduces_first_labels():
    h, w, n_labels = 6, 8, 3
    labels0 = F.one_hot(torch.randint(0, n_labels, (h, w)), n_labels).float()
    feats = position_features(h, w)[None].expand(10, -1, -1, -1)
    for soft in propagate(feats, labels0, topk=7, temperature=0.1, queue=20, radius=20):
        assert torch.equal(soft.argmax(-1), labels0.argmax(-1))
        torch.testing.assert_close(soft, labels0, atol=2e-3, rtol=0)


@pytest.mark.parametrize("restrict_first", [False, True])
def test_oracle_panning_scene_follows_the_motion(restrict_first):
    h, w, n_frames, n_labels = 5, 12, 6, 4
    world_w = w + n_frames
    labels0 = F.one_hot(torch.randint(0, n_labels, (h, w)), n_labels).float()
    feats = torch.stack([position_features(h, w, t, world_w) for t in range(n_frames)])
    radius = n_frames + 1 if restrict_first else 2  # the first frame's match drifts one column a frame
    outs = propagate(feats, labels0, topk=7, temperature=0.1, queue=3, radius=radius, restrict_first=restrict_first)
    for t, soft in enumerate(outs, start=1):
        seen = w - t  # columns whose content was visible in frame 0
        assert torch.equal(soft[:, :seen].argmax(-1), labels0[:, t:].argmax(-1))


def test_labels_to_grid_and_back():
    mask = torch.zeros(8, 12, dtype=torch.long)
    mask[:4, :6] = 1
    mask[0, 0] = 255  # void: no label
    grid = labels_to_grid(mask, 2, (2, 3))
    assert grid.shape == (2, 3, 2)
    torch.testing.assert_close(grid[0, 0], torch.tensor([0.0, 15 / 16]))
    torch.testing.assert_close(grid[1, 2], torch.tensor([1.0, 0.0]))
    labels = grid_to_labels(grid, (8, 12), (16, 24))
    assert labels.shape == (16, 24)
    assert labels[:4, :8].eq(1).all() and labels[12:, 16:].eq(0).all()


def test_norm_mask_scales_each_label_to_unit_range_before_the_argmax():
    """Label 1 never wins a plain argmax, but it does where its own scores peak once each label's map
    is min-max scaled (DINO's norm_mask), computed here by hand with numpy on the same upsampling."""
    torch.manual_seed(0)
    soft = torch.rand(3, 4, 3)
    soft[..., 0] += 1.0  # background dominates everywhere
    soft[..., 2] = 0.0  # an absent label: left alone (all zero)
    plain = grid_to_labels(soft, (6, 8), (6, 8))
    assert plain.eq(0).all()
    normed = grid_to_labels(soft, (6, 8), (6, 8), norm_mask=True)
    up = F.interpolate(soft.permute(2, 0, 1)[None], size=(6, 8), mode="bilinear", align_corners=False)[0].numpy()
    scaled = np.stack([(c - c.min()) / (c.max() - c.min()) if c.max() > 0 else c for c in up])
    np.testing.assert_array_equal(normed.numpy(), scaled.argmax(0))
    assert normed.eq(1).any() and not normed.eq(2).any()


def test_queue_frames_carry_labels_when_the_first_frame_is_out_of_reach():
    h, w, n_frames, n_labels = 5, 12, 6, 4
    world_w = w + n_frames
    labels0 = F.one_hot(torch.randint(0, n_labels, (h, w)), n_labels).float()
    feats = torch.stack([position_features(h, w, t, world_w) for t in range(n_frames)])
    outs = propagate(feats, labels0, topk=1, temperature=0.1, queue=3, radius=2, restrict_first=True)
    for t, soft in enumerate(outs, start=1):  # from frame 2 on the first frame's match is >= 2 columns away
        seen = w - t
        assert torch.equal(soft[:, :seen].argmax(-1), labels0[:, t:].argmax(-1)), t


def test_grid_to_labels_resizes_to_the_annotation_by_pixel_centres():
    """Kills U2 ('nearest' instead of 'nearest-exact'). Labels [0, 1, 2] (width 3) to width 2: output
    pixel centres 0.5 and 1.5 map to source x 0.75 and 2.25, i.e. pixels 0 and 2 -> [0, 2]
    ('nearest' takes floor(i * 1.5): pixels 0 and 1)."""
    soft = torch.eye(3)[None]  # (h=1, w=3, K=3): cell j is label j
    np.testing.assert_array_equal(grid_to_labels(soft, (1, 3), (1, 2)).numpy(), [[0, 2]])
