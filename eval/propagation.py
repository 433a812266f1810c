"""Video label propagation by k-nearest-neighbour matching of patch features.

The protocol of the public harnesses SiamMAE follows (CRW's ``test.py``, DINO's
``eval_video_segmentation.py``): every patch of a new frame (the query) looks at the patches
of a context -- the first frame with its ground truth plus the last ``queue`` frames with their
propagated soft labels -- scores them by the dot product of L2-normalised features, keeps its
``topk`` best sources over all context frames, and takes the softmax(score / temperature)
weighted mean of their labels. Sources of the queue frames (and of the first frame with
``restrict_first``) must lie within ``radius`` patches of the query's position: window 'circle',
Euclidean distance on the patch grid strictly less than radius (CRW's ``MaskedAttention``), or
'square', row and column offsets both at most radius (DINO's ``restrict_neighborhood``).

Memory stays bounded: affinities are computed for a band of query rows at a time against only
the source rows their windows can reach, never as a dense (context, h*w, h*w) tensor.
"""
import functools
import math

import torch
import torch.nn.functional as F

MAX_ELEMS = 2 ** 27  # affinity entries per chunk: 512 MiB in float32
WINDOWS = ("circle", "square")


@functools.lru_cache(maxsize=256)  # the same few bands recur on every frame of a video
def neighbourhood(rows, src_rows, width, radius, device, window="circle"):
    """Which sources lie within `radius` of each query (window: 'circle' or 'square').

    rows: query rows (r0, r1); src_rows: source rows (s0, s1); width: grid width w.
    Returns bool (Q, S), Q = (r1 - r0) * w queries, S = (s1 - s0) * w sources, row-major.
    """
    dy = torch.arange(*rows, device=device)[:, None] - torch.arange(*src_rows, device=device)[None]
    dx = torch.arange(width, device=device)[:, None] - torch.arange(width, device=device)[None]
    dy, dx = dy[:, None, :, None], dx[None, :, None, :]  # (r1 - r0, w, s1 - s0, w) once broadcast
    near = (dy.abs() <= radius) & (dx.abs() <= radius) if window == "square" else dy ** 2 + dx ** 2 < radius * radius
    return near.reshape(dy.shape[0] * width, dy.shape[2] * width)


def reach_rows(radius, window):
    """Row offsets beyond which no source is inside any query's window."""
    return max(0, math.floor(radius) if window == "square" else math.ceil(radius) - 1)


def rows_per_chunk(h, w, n_local, reach, n_global, max_elems):
    """The most query rows whose affinities fit in max_elems entries (at least one).

    n_local frames are searched within `reach` rows of the queries, n_global sources
    (the unrestricted first frame) are searched everywhere.
    """
    for rows in range(h, 1, -1):
        if rows * w * (n_local * min(h, rows + 2 * reach) * w + n_global) <= max_elems:
            return rows
    return 1


def propagate_frame(query, local_feats, local_labels, global_feats, global_labels, topk, temperature,
                    radius, max_elems=MAX_ELEMS, window="circle"):
    """Soft labels of one frame from its context.

    query: (h, w, D) features of the frame to label.
    local_feats, local_labels: (C, h, w, D), (C, h, w, K) context searched within `radius`.
    global_feats, global_labels: (M, D), (M, K) context searched everywhere (M may be 0).
    Returns (h, w, K) soft labels.
    """
    h, w, dim = query.shape
    n_local, n_global, n_labels = local_feats.shape[0], global_feats.shape[0], local_labels.shape[-1]
    reach = reach_rows(radius, window)
    step = rows_per_chunk(h, w, n_local, reach, n_global, max_elems)
    out = query.new_empty(h, w, n_labels)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        s0, s1 = max(0, r0 - reach), min(h, r1 + reach)
        q = query[r0:r1].reshape(-1, dim)  # (Q, D)
        src_feats = torch.cat([global_feats, local_feats[:, s0:s1].reshape(-1, dim)])  # (M + C*S, D)
        src_labels = torch.cat([global_labels, local_labels[:, s0:s1].reshape(-1, n_labels)])
        aff = q @ src_feats.T  # (Q, M + C*S)
        if n_local:
            near = neighbourhood((r0, r1), (s0, s1), w, float(radius), query.device, window)  # (Q, S)
            aff[:, n_global:].view(q.shape[0], n_local, -1).masked_fill_(~near[:, None], float("-inf"))
        scores, idx = aff.topk(min(topk, aff.shape[1]), dim=1)  # (Q, k)
        weights = F.softmax(scores / temperature, dim=1)
        out[r0:r1] = torch.einsum("qk,qkl->ql", weights, src_labels[idx]).reshape(r1 - r0, w, n_labels)
    return out


def propagate(features, labels0, topk=7, temperature=0.1, queue=20, radius=20., restrict_first=False,
              max_elems=MAX_ELEMS, window="circle"):
    """Carry the first frame's labels through a video.

    features: iterable of per-frame (h, w, D) L2-normalised features, frame 0 first (a (T, h, w, D)
    tensor works); it is consumed one frame at a time, so a generator keeps memory flat.
    labels0: (h, w, K) first-frame labels on the feature grid (one-hot, soft, or heatmaps).
    Yields (h, w, K) soft labels of frames 1, 2, ... in order.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got '{window}'")
    frames = iter(features)
    first = next(frames)
    if first.shape[:2] != labels0.shape[:2]:
        raise ValueError(f"labels grid {tuple(labels0.shape[:2])} != feature grid {tuple(first.shape[:2])}")
    labels0 = labels0.to(first.device, first.dtype)
    h, w, dim = first.shape
    ring_feats = first.new_empty(queue, h, w, dim)
    ring_labels = first.new_empty(queue, h, w, labels0.shape[-1])
    if restrict_first:
        global_feats, global_labels = first.new_empty(0, dim), labels0.new_empty(0, labels0.shape[-1])
    else:
        global_feats, global_labels = first.reshape(-1, dim), labels0.reshape(-1, labels0.shape[-1])
    for t, feat in enumerate(frames):
        n = min(t, queue)  # the order inside the ring does not matter: top-k is over a set
        local_feats, local_labels = ring_feats[:n], ring_labels[:n]
        if restrict_first:
            local_feats = torch.cat([first[None], local_feats])
            local_labels = torch.cat([labels0[None], local_labels])
        soft = propagate_frame(feat, local_feats, local_labels, global_feats, global_labels,
                               topk, temperature, radius, max_elems, window)
        if queue > 0:
            ring_feats[t % queue], ring_labels[t % queue] = feat, soft
        yield soft


def labels_to_grid(mask, n_labels, grid):
    """A label map to soft one-hot labels on the feature grid (area downsampling).

    mask: (H, W) integer tensor, values in [0, n_labels) (others, e.g. 255 = void, get no label).
    grid: (h, w). Returns (h, w, n_labels) float32, each cell the fraction of its pixels per label.
    """
    valid = (mask >= 0) & (mask < n_labels)
    onehot = F.one_hot(torch.where(valid, mask, 0).long(), n_labels).float() * valid[..., None]
    pooled = F.interpolate(onehot.permute(2, 0, 1)[None], size=tuple(grid), mode="area")
    return pooled[0].permute(1, 2, 0)


def grid_to_labels(soft, frame_size, out_size, norm_mask=False):
    """Soft grid labels to a label map: bilinear upsampling to the frame the network saw, argmax,
    nearest resize to the annotation size. norm_mask: first scale each label's map to [0, 1]
    (min-max; maps whose maximum is not above 0 are left alone), as DINO's DAVIS script does.

    soft: (h, w, K); frame_size: (H', W') network input; out_size: (H, W). Returns (H, W) int64.
    """
    up = F.interpolate(soft.permute(2, 0, 1)[None].float(), size=tuple(frame_size), mode="bilinear",
                       align_corners=False)[0]
    if norm_mask:
        low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
        up = torch.where(high > 0, (up - low) / (high - low).clamp_min(1e-12), up)
    labels = up.argmax(dim=0)
    if tuple(frame_size) == tuple(out_size):
        return labels
    return F.interpolate(labels[None, None].float(), size=tuple(out_size), mode="nearest-exact")[0, 0].long()
