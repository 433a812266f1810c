# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Pre-training pairs: frame pairs (SiamMAE) or global-to-local crops (CropMAE) from any source.

An item is (frames, n_skipped): frames a uint8 RGB tensor (R, 2, 3, S, S) (normalised on the
training device by transforms.normalize: a quarter of the bytes through the loader),
R = repeated_sampling pairs from one read of one file; n_skipped the number of unreadable
files skipped (and replaced by other random items) to produce it.

All randomness of item `index` comes from np.random.default_rng([seed, epoch, index]), so an
item is the same whatever the number of workers or ranks, and after resuming mid-epoch.
"""
import logging

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from .crops import GLOBAL_SCALE_FRAMES, GLOBAL_SCALE_IMAGES, global_local_crop
from .sources import TruncatedError, UnreadableError
from .device_decode import collate_encoded
from .frames import FrameSource
from .images import ImageSource
from .transforms import draw_pair_crop, paired_crop, to_uint8_tensor

logger = logging.getLogger("siammae." + __name__)  # goes where the run logs (train.log)

REFERENCE_FPS = 30.0
MAX_ATTEMPTS = 100


def scaled_gap(frame_gap, fps):
    """frame_gap (MIN, MAX) in frames at 30 fps -> (min, max) in frames at this video's fps."""
    scale = (fps or REFERENCE_FPS) / REFERENCE_FPS
    gap_min = max(1, int(round(frame_gap[0] * scale)))
    return gap_min, max(gap_min, int(round(frame_gap[1] * scale)))


def sample_pair(rng, num_frames, gap_min, gap_max):
    """(f1, f2) with gap = f2 - f1 uniform in [gap_min, min(gap_max, num_frames - 1)] and f1
    uniform over [0, num_frames - 1 - gap]. A video too short for gap_min gets its largest
    gap: (0, num_frames - 1).
    """
    largest = num_frames - 1
    if largest < gap_min:
        return 0, max(largest, 0)
    gap = int(rng.integers(gap_min, min(gap_max, largest) + 1))
    f1 = int(rng.integers(0, num_frames - gap))
    return f1, f1 + gap


def fit_pairs(indices, num_frames):
    """Pairs [f1, f2, f1, f2, ...] drawn over a header's frame count, moved inside the first num_frames
    (the frames a truncated video holds): a pair that fits stays; one that does not keeps its gap at f1
    modulo the room left, or becomes (0, num_frames - 1) when its gap does not fit at all."""
    out = []
    for f1, f2 in zip(indices[::2], indices[1::2]):
        gap = f2 - f1
        if f2 >= num_frames and gap >= num_frames:
            f1, gap = 0, num_frames - 1
        elif f2 >= num_frames:
            f1 = f1 % (num_frames - gap)
        out += [f1, f1 + gap]
    return out


def fit_frames(indices, num_frames):
    """Single frames drawn over a header's frame count, wrapped into the first num_frames."""
    return [t % num_frames for t in indices]


def _reason(path, err):
    """One line '<path>: <reason>' for any error met reading a file."""
    if isinstance(err, UnreadableError):
        return str(err)
    lines = str(err).strip().splitlines()
    return f'{path}: {type(err).__name__}' + (f': {lines[0]}' if lines else '')


def one_cv2_thread():
    """OpenCV runs one thread per process: the loader workers are the parallelism. Called where the
    dataset is made, before the loader forks its workers: a worker forked while OpenCV's thread pool
    runs inherits the pool's state without its threads, and hangs when it resizes the pool (seen in
    pthread_cond_destroy). Called again in each worker, for start methods other than fork."""
    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


class PairDataset(Dataset):
    """One item per file of `source`, yielding R pairs per read.

    source: see datasets/sources.py. pretext: 'video' (f1, f2 with a random gap, the same crop
    and flip) or 'crop' (global and local view of one random frame / the image; crop_scale: the
    global view's area range, default CropMAE's: (0.1, 1) for images, (0.5, 1) for video frames).
    Files found unreadable, videos too short for the minimum gap and truncated videos (frames ending
    before the header's count: pairs are drawn from the frames they hold) are flagged in tensors
    shared with the loader workers: each is logged once, and `stats()` counts them.
    """

    def __init__(self, source, pretext='video', input_size=224, frame_gap=(4, 48),
                 repeated_sampling=2, seed=0, encoded=False, crop_scale=None):
        if pretext not in ('video', 'crop'):
            raise ValueError(f"pretext must be 'video' or 'crop', got {pretext!r}")
        if encoded and (pretext != 'video' or not isinstance(source, FrameSource)):
            raise ValueError(f'{source.name}: decoding on the device (--gpu_decode) needs pre-extracted '
                             'frames (a folder with manifest.csv) and pretext video')
        if len(source) == 0:
            raise ValueError(f'{source.name}: dataset is empty (no files found)')
        if not (1 <= frame_gap[0] <= frame_gap[1]):
            raise ValueError(f'frame_gap must satisfy 1 <= MIN <= MAX, got {tuple(frame_gap)}')
        if crop_scale is not None and not (0 < crop_scale[0] <= crop_scale[1] <= 1):
            raise ValueError(f'crop_scale must satisfy 0 < MIN <= MAX <= 1, got {tuple(crop_scale)}')
        if repeated_sampling < 1 or seed < 0:
            raise ValueError(f'need repeated_sampling >= 1 and seed >= 0, got '
                             f'{repeated_sampling} and {seed}')
        self.source = source
        self.pretext = pretext
        self.input_size = int(input_size)
        self.frame_gap = (int(frame_gap[0]), int(frame_gap[1]))
        self.repeated_sampling = int(repeated_sampling)
        self.seed = int(seed)
        self.encoded = bool(encoded)
        self.crop_scale = (tuple(float(s) for s in crop_scale) if crop_scale is not None else
                           GLOBAL_SCALE_IMAGES if isinstance(source, ImageSource) else GLOBAL_SCALE_FRAMES)
        self._unreadable = torch.zeros(len(source), dtype=torch.bool).share_memory_()
        self._short = torch.zeros(len(source), dtype=torch.bool).share_memory_()
        self._decodable = torch.zeros(len(source), dtype=torch.int64).share_memory_()  # truncated videos: > 0
        one_cv2_thread()

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        """key: (epoch, index), as pre-training's sampler passes it (so that persistent loader workers
        see the epoch), or an index alone for epoch 0.
        -> (frames (R, 2, 3, S, S) uint8 RGB, n_skipped int); with encoded=True
        ((jpegs: 2R uint8 1-D tensors, crops (R, 5) rows (y, x, h, w, flip), their 2R file names),
        n_skipped)."""
        one_cv2_thread()
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        i, n_skipped = index, 0
        for _ in range(MAX_ATTEMPTS):
            sample_rng = np.random.default_rng(int(rng.integers(2 ** 63)))
            if not self._unreadable[i]:
                try:
                    return self._load(i, sample_rng), n_skipped
                except (UnreadableError, cv2.error, OSError) as e:
                    self._flag_unreadable(i, e)
            n_skipped += 1
            i = int(rng.integers(len(self)))
        raise RuntimeError(f'{self.source.name}: {MAX_ATTEMPTS} unreadable files in a row for '
                           f'item {index}; is most of the dataset corrupt?')

    def _load(self, i, rng):
        """R pairs from item i: uint8 RGB tensor (R, 2, 3, S, S), or (jpegs, crops, files) when encoded."""
        size, reps = self.input_size, self.repeated_sampling
        with self.source.open(i) as clip:
            n = clip.num_frames
            if self.pretext == 'crop':
                frames = self._read(clip, i, [int(t) for t in rng.integers(n, size=reps)], fit_frames)
                return to_uint8_tensor(np.stack([global_local_crop(f, rng, size, self.crop_scale) for f in frames]))
            gap_min, gap_max = scaled_gap(self.frame_gap, clip.fps)
            if n - 1 < gap_min:
                self._flag_short(i, n, gap_min)
            indices = [t for _ in range(reps) for t in sample_pair(rng, n, gap_min, gap_max)]
            if self.encoded:  # the same draws as below, decoding left to the training device
                crops = [(*box, flip) for box, flip in
                         (draw_pair_crop(rng, clip.height, clip.width) for _ in range(reps))]
                return (clip.read_encoded(indices), torch.tensor(crops, dtype=torch.int64),
                        [clip.frame_file(t) for t in indices])
            frames = self._read(clip, i, indices, fit_pairs, gap_min)
        if len({f.shape for f in frames}) > 1:
            raise UnreadableError(f'{self.source.paths[i]}: frames change size within the video')
        return to_uint8_tensor(np.stack([paired_crop(frames[2 * k], frames[2 * k + 1], rng, size)
                                         for k in range(reps)]))

    def _read(self, clip, i, indices, fit, gap_min=0):
        """clip.read(indices), drawn over the header's frame count; in a truncated video, indices past
        its end are moved inside it by fit(indices, decodable frames), alike whether the truncation was
        known before this read or is found by it, so the item does not depend on which."""
        known = int(self._decodable[i])
        if known:
            return clip.read(fit(indices, known))
        try:
            return clip.read(indices)
        except TruncatedError as e:
            self._flag_truncated(i, e, gap_min)
            return clip.read(fit(indices, e.num_frames))

    def collate(self, items):
        """The loader's collate_fn: stacked uint8 pairs, or an EncodedPairs batch when encoded."""
        return collate_encoded(items, self.input_size) if self.encoded else default_collate(items)

    def _flag_unreadable(self, i, err):
        if not self._unreadable[i]:
            self._unreadable[i] = True
            logger.warning('skipping unreadable file (replaced by another sample): %s',
                           _reason(self.source.paths[i], err))

    def _flag_truncated(self, i, err, gap_min):
        if not self._decodable[i]:
            self._decodable[i] = err.num_frames
            logger.warning('%s; drawing its frames from the first %d', err, err.num_frames)
        if err.num_frames - 1 < gap_min:
            self._flag_short(i, err.num_frames, gap_min)

    def _flag_short(self, i, num_frames, gap_min):
        if not self._short[i]:
            self._short[i] = True
            logger.warning('%s: %d frames, fewer than the minimum gap %d + 1; using gap %d',
                           self.source.paths[i], num_frames, gap_min, max(num_frames - 1, 0))

    def check(self):
        """Raise ValueError if no file can be read (probing in order until one can), by the path
        training takes (encoded: the worker's checks of the JPEG file too)."""
        first_error = None
        for i in range(len(self)):
            try:
                with self.source.open(i) as clip:
                    clip.read([0])
                    if self.encoded:
                        clip.read_encoded([0])
                return
            except (UnreadableError, cv2.error, OSError) as e:
                self._flag_unreadable(i, e)
                first_error = first_error or _reason(self.source.paths[i], e)
        raise ValueError(f'{self.source.name}: none of the {len(self)} files is readable '
                         f'(first: {first_error})')

    def stats(self):
        """Counts over what this process and its loader workers have read so far."""
        return dict(items=len(self), unreadable=int(self._unreadable.sum()),
                    short=int(self._short.sum()), truncated=int((self._decodable > 0).sum()))

    def __repr__(self):
        return (f'{type(self).__name__}(source={self.source.name!r}, items={len(self)}, '
                f'pretext={self.pretext!r}, input_size={self.input_size}, '
                f'frame_gap={self.frame_gap}, repeated_sampling={self.repeated_sampling}, '
                f'seed={self.seed}' + (f', crop_scale={self.crop_scale})' if self.pretext == 'crop' else ')'))
