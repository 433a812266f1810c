# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Decoding and cropping pairs on the training device (``--gpu_decode``).

Loader workers then only read the JPEG files of pre-extracted frames and draw the crops (the same
draws, from the same generator, as the CPU path); the main process decodes the whole batch at once
(``torchvision.io.decode_jpeg``, batched with nvJPEG on CUDA) and crops, resizes and flips it with one
``roi_align`` per distinct frame size. On the CPU the same code runs, which is how it is tested.
"""
import itertools
import logging
import queue
import threading
from collections import defaultdict
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import roi_align

from util.image import normalize

logger = logging.getLogger("siammae." + __name__)  # goes where the run logs (train.log)

# Frames per decode_jpeg call: nvJPEG's batched decoder failed on 256 frames on an H200 machine
# (torchvision 0.26) and decoded 8; bench/gpu_check.sh nvjpeg probes 8, 64 and 256.
DECODE_CHUNK = 64


class EncodedPairs(NamedTuple):
    """A batch of undecoded pairs: data, its B*R*2 JPEG files back to back (1-D uint8; item, pair, frame
    order) and lengths (B*R*2,) int64, their sizes: one buffer crosses from the loader worker, where a
    tensor per file (one shared-memory segment each) cost the training process 72-105 ms of CPU per 256
    frames to receive, against 2-2.5 ms (bench/data_throughput.py --gpu_decode, 2-core CPU); crops,
    (B*R, 5) int64 rows (y, x, h, w, flip) shared by both frames of a pair; size, output side; files, the
    files' names (for the message when one does not decode)."""
    data: torch.Tensor
    lengths: torch.Tensor
    crops: torch.Tensor
    size: int
    files: list

    @property
    def jpegs(self):
        """The files as a list of 1-D uint8 views of data."""
        return list(torch.split(self.data, self.lengths.tolist()))


def collate_encoded(items, size):
    """[((jpegs, crops (R, 5), files), n_skipped), ...] from PairDataset(encoded=True)
    -> (EncodedPairs, n_skipped (B,))."""
    jpegs = [j for (item_jpegs, _, _), _ in items for j in item_jpegs]
    lengths = torch.tensor([len(j) for j in jpegs], dtype=torch.int64)
    crops = torch.cat([c for (_, c, _), _ in items])
    files = [f for (_, _, item_files), _ in items for f in item_files]
    return EncodedPairs(torch.cat(jpegs), lengths, crops, size, files), torch.tensor([n for _, n in items])


def decode_crop(jpegs, crops, size, device):
    """Decode and crop pairs on device -> (frames (B*R, 2, 3, size, size) float32 RGB in 0..255,
    bad: indices into jpegs of the frames that did not decode; each of their pairs is replaced by a
    copy of the batch's first whole pair, so that the batch keeps its shape).

    On CUDA the work runs on a side stream, overlapping the training step still queued on the current
    one; see _on_side_stream for why the host waits for it before returning."""
    device, bad = torch.device(device), []

    def work():
        out, bad_frames = _decode_crop(jpegs, crops, size, device)
        bad.extend(bad_frames)
        return out

    return (work() if device.type != 'cuda' else _on_side_stream(work, device, wait_host=True)), bad


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
    """JPEGs -> (list of (3, H, W) uint8 RGB on device, None where a file does not decode; the indices
    of those), DECODE_CHUNK per call. A chunk that fails is decoded again one file at a time (the loader
    workers check markers, header and size, not the entropy-coded data, so a corrupt file can get this
    far); when no file of the batch decodes, the decoder itself is unusable: an error. On CUDA the
    current stream (decode_crop's side stream) is emptied first each time: nvJPEG's writes ignore its
    queue (see _on_side_stream)."""
    images, bad, reason = [], [], None
    for i in range(0, len(jpegs), DECODE_CHUNK):
        chunk = jpegs[i:i + DECODE_CHUNK]
        try:
            images += _decode(chunk, device)
            continue
        except RuntimeError as e:
            reason = str(e).splitlines()[0]
        for k, jpeg in enumerate(chunk, start=i):
            try:
                images += _decode([jpeg], device)
            except RuntimeError:
                images.append(None)
                bad.append(k)
    if jpegs and len(bad) == len(jpegs):  # e.g. nvJPEG's hardware decoder unusable on this machine
        raise RuntimeError(f"--gpu_decode: decoding {len(jpegs)} JPEG frames on {device} failed ({reason}); "
                           "train without --gpu_decode (the loader workers then decode)")
    return images, bad


def _decode(jpegs, device):
    if device.type == 'cuda':
        torch.cuda.current_stream(device).synchronize()
    return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)


def _decode_crop(jpegs, crops, size, device):
    """decode_crop's work, on whatever stream is current -> (frames, indices of the bad jpegs)."""
    images, bad = _decode_jpegs(jpegs, device)
    if bad:
        images, crops = _replace_broken_pairs(images, crops, sorted({k // 2 for k in bad}))
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
    return out.view(-1, 2, 3, size, size), bad


def _replace_broken_pairs(images, crops, broken):
    """Pairs `broken` (indices) -> copies of the first whole pair, images and crop."""
    whole = next((p for p in range(len(crops)) if p not in set(broken)), None)
    if whole is None:
        raise RuntimeError(f"--gpu_decode: every pair of a batch of {len(crops)} has a frame that does not decode")
    images, crops = list(images), crops.clone()
    for p in broken:
        images[2 * p:2 * p + 2] = images[2 * whole:2 * whole + 2]
        crops[p] = crops[whole]
    return images, crops


def _count_bad(pairs, n_skipped, bad):
    """n_skipped (B,) plus, per item, its pairs replaced for frames that did not decode (logged)."""
    if not bad:
        return n_skipped
    reps = len(pairs.crops) // len(n_skipped)
    n_skipped = n_skipped.clone()
    for p in sorted({k // 2 for k in bad}):
        n_skipped[p // reps] += 1
    for k in bad:
        logger.warning('skipping a frame pair: %s: not a decodable JPEG (--gpu_decode); the pair is replaced '
                       'by another of its batch', pairs.files[k])
    return n_skipped


def to_device(batch, device):
    """A loader batch -> (frames (B*R, 2, 3, S, S) float32 ImageNet-normalised on device, n_skipped (B,)).

    batch: (frames (B, R, 2, 3, S, S) uint8, n_skipped) from the CPU path, or (EncodedPairs, n_skipped).
    From host memory to a GPU the copy (and normalisation) runs on the side stream: on the training stream
    it would hold the next step's kernels until the copy engine is done (77 MB per 256 pairs of 224 px)."""
    frames, n_skipped = batch
    device = torch.device(device)
    if isinstance(frames, EncodedPairs):
        out, bad = decode_crop(frames.jpegs, frames.crops, frames.size, device)
        return normalize(out), _count_bad(frames, n_skipped, bad)

    def upload():
        return normalize(frames.flatten(0, 1).to(device, non_blocking=True))

    if device.type == 'cuda' and frames.device.type == 'cpu':
        return _on_side_stream(upload, device, wait_host=False), n_skipped
    return upload(), n_skipped


def device_batches(loader, device, threaded=None):
    """Loader batches -> to_device(batch, device) for each, in order.

    threaded (default: undecoded batches on CUDA, i.e. --gpu_decode): a thread prepares the next batch
    while the training thread runs the current step. The host waits for each batch's decode (see
    _on_side_stream), and in the training thread that wait held the launch of the step's kernels: an
    H200 step fed with --gpu_decode ran at 0.776 of its synthetic rate. CPU-decoded batches need no
    thread: their copy to the device is already queued without waiting (to_device). An error in the
    thread is raised here; closing this generator (e.g. an epoch stopped early) stops the thread and waits
    for it, so that a persistent-worker loader is never iterated by two threads at once."""
    device = torch.device(device)
    if device.type == 'cuda' and device.index is None:  # a new thread's current device is device 0
        device = torch.device('cuda', torch.cuda.current_device())
    batches = iter(loader)
    if threaded is None:
        first = next(batches, None)
        if first is None:
            return
        threaded = device.type == 'cuda' and isinstance(first[0], EncodedPairs)
        batches = itertools.chain([first], batches)
    if not threaded:
        for batch in batches:
            yield to_device(batch, device)
        return
    ready, stop = queue.Queue(maxsize=1), threading.Event()
    thread = threading.Thread(target=_prepare, args=(batches, device, ready, stop), name='device_batches',
                              daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


_END = object()


def _prepare(batches, device, ready, stop):
    """device_batches' thread: to_device each batch into `ready` until the batches end (then _END), an
    error (then the error) or `stop`."""
    try:
        if device.type == 'cuda':
            torch.cuda.set_device(device)  # the current device is per thread
        for batch in batches:
            if stop.is_set() or not _put(ready, to_device(batch, device), stop):
                return
        _put(ready, _END, stop)
    except BaseException as e:  # handed to the training thread, which raises it
        _put(ready, e, stop)


def _put(ready, item, stop):
    """Put item into ready unless stop is set first -> whether it was put."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=0.1)
            return True
        except queue.Full:
            pass
    return False
