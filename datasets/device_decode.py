# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Decoding and cropping pairs on the training device (``--gpu_decode``).

Loader workers then only read the JPEG files of pre-extracted frames and draw the crops (the same
draws, from the same generator, as the CPU path); the main process decodes the whole batch at once
(``torchvision.io.decode_jpeg``, batched with nvJPEG on CUDA) and crops, resizes and flips it with one
``roi_align`` per distinct frame size. On the CPU the same code runs, which is how it is tested.
"""
from collections import defaultdict
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align

from util.image import normalize

# Frames per decode_jpeg call: nvJPEG's batched decoder failed on 256 frames on an H200 machine
# (torchvision 0.26) and decoded 8; bench/gpu_check.sh nvjpeg probes 8, 64 and 256.
DECODE_CHUNK = 64


class EncodedPairs(NamedTuple):
    """A batch of undecoded pairs: jpegs, B*R*2 uint8 1-D tensors (item, pair, frame order);
    crops, (B*R, 5) int64 rows (y, x, h, w, flip) shared by both frames of a pair; size, output side."""
    jpegs: list
    crops: torch.Tensor
    size: int


def collate_encoded(items, size):
    """[((jpegs, crops (R, 5)), n_skipped), ...] from PairDataset(encoded=True) -> (EncodedPairs, n_skipped (B,))."""
    jpegs = [j for (item_jpegs, _), _ in items for j in item_jpegs]
    crops = torch.cat([c for (_, c), _ in items])
    return EncodedPairs(jpegs, crops, size), torch.tensor([n for _, n in items])


def decode_crop(jpegs, crops, size, device):
    """Decode and crop pairs on device -> (B*R, 2, 3, size, size) float32 RGB in 0..255.

    On CUDA the work runs on a side stream, overlapping the training step still queued on the current
    one; see _on_side_stream for why the host waits for it before returning."""
    device = torch.device(device)
    if device.type != 'cuda':
        return _decode_crop(jpegs, crops, size, device)
    return _on_side_stream(lambda: _decode_crop(jpegs, crops, size, device), device, wait_host=True)


_SIDE_STREAMS = {}


def _on_side_stream(fn, device, wait_host):
    """fn() on this device's input stream -> its output tensor, ready for the current stream, while the
    training step queued on the current stream keeps the GPU busy. wait_host=False: the current stream
    waits for the side stream (stream order, enough for copies and kernels); True: the host waits, for
    nvJPEG. record_stream keeps the output's block out of the side stream's pool until the current stream
    is done with it.

    torchvision's CUDA decoder allocates its outputs on the current stream but has nvJPEG write them
    without waiting for the work queued there (pytorch/vision#9606): handed a block the caching allocator
    has just recycled, it overwrites data that queued kernels have yet to read (seen here as an index
    assert in the masking gather of the next step). So decoding runs on the side stream, whose pool holds
    only its own buffers; _decode_jpegs empties that stream before each decode call, and the host waits
    for it before returning, so no decode output can alias memory a queued kernel still reads."""
    stream = _SIDE_STREAMS.setdefault(device, torch.cuda.Stream(device))
    with torch.cuda.stream(stream):
        out = fn()
    current = torch.cuda.current_stream(device)
    if wait_host:
        stream.synchronize()
    else:
        current.wait_stream(stream)
    out.record_stream(current)
    return out


def _decode_jpegs(jpegs, device):
    """JPEGs -> list of (3, H, W) uint8 RGB on device, DECODE_CHUNK per call. On CUDA the current stream
    (decode_crop's side stream) is emptied first each time: nvJPEG's writes ignore its queue (see
    _on_side_stream)."""
    images = []
    for i in range(0, len(jpegs), DECODE_CHUNK):
        if device.type == 'cuda':
            torch.cuda.current_stream(device).synchronize()
        try:
            images += decode_jpeg(jpegs[i:i + DECODE_CHUNK], mode=ImageReadMode.RGB, device=device)
        except RuntimeError as e:  # e.g. nvJPEG's hardware decoder unusable on this machine
            reason = str(e).splitlines()[0]
            raise RuntimeError(f"--gpu_decode: decoding {len(jpegs)} JPEG frames on {device} failed ({reason}); "
                               "train without --gpu_decode (the loader workers then decode)") from None
    return images


def _decode_crop(jpegs, crops, size, device):
    """decode_crop's work, on whatever stream is current."""
    images = _decode_jpegs(jpegs, device)
    frame_crops = crops.to(device).repeat_interleave(2, dim=0)  # (2BR, 5): one row per frame
    out = torch.empty(len(images), 3, size, size, device=device)
    by_shape = defaultdict(list)
    for k, img in enumerate(images):
        by_shape[tuple(img.shape[-2:])].append(k)
    for idx in by_shape.values():
        sel = torch.tensor(idx, device=device)
        y, x, h, w = frame_crops[sel, :4].float().unbind(1)
        rois = torch.stack([torch.arange(len(idx), device=device, dtype=torch.float32), x, y, x + w, y + h], dim=1)
        stack = torch.stack([images[k] for k in idx]).float()
        out[sel] = roi_align(stack, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = frame_crops[:, 4].bool().view(-1, 1, 1, 1)
    out = torch.where(flip, out.flip(-1), out)
    return out.view(-1, 2, 3, size, size)


def to_device(batch, device):
    """A loader batch -> (frames (B*R, 2, 3, S, S) float32 ImageNet-normalised on device, n_skipped (B,)).

    batch: (frames (B, R, 2, 3, S, S) uint8, n_skipped) from the CPU path, or (EncodedPairs, n_skipped).
    From host memory to a GPU the copy (and normalisation) runs on the side stream: on the training stream
    it would hold the next step's kernels until the copy engine is done (77 MB per 256 pairs of 224 px)."""
    frames, n_skipped = batch
    device = torch.device(device)
    if isinstance(frames, EncodedPairs):
        return normalize(decode_crop(frames.jpegs, frames.crops, frames.size, device)), n_skipped

    def upload():
        return normalize(frames.flatten(0, 1).to(device, non_blocking=True))

    if device.type == 'cuda' and frames.device.type == 'cpu':
        return _on_side_stream(upload, device, wait_host=False), n_skipped
    return upload(), n_skipped
