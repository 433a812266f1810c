# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Pre-extracted frames on disk: root/<class>/<video>/000001.jpg ... plus root/manifest.csv.

The manifest (written by datasets/extract_frames.py) has one row per video folder:
path (relative to root), num_frames, fps, height, width. Reading frames needs only a
JPEG decoder, no video decoder, and no directory listing at load time.
"""
import csv
import io
import math
import os

import cv2
import numpy as np
import torch

from .sources import Clip, UnreadableError, read_text

MANIFEST_NAME = 'manifest.csv'
MANIFEST_FIELDS = ('path', 'num_frames', 'fps', 'height', 'width')
JPEG_QUALITY = 90  # extract_frames.py's default; generated frame sets are saved alike


def frame_name(i):
    """File name of 0-based frame i: 000001.jpg for the first frame."""
    return f'{i + 1:06d}.jpg'


def write_manifest(path, rows):
    """Write rows (dicts with MANIFEST_FIELDS) to a CSV, atomically (temp file, then rename)."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r['path']):
            writer.writerow(row)
    os.replace(tmp, path)


def read_manifest(path):
    """Rows of a manifest as dicts: path (str), num_frames (int), fps (float), height, width (int)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no manifest (run datasets/extract_frames.py first)')
    with io.StringIO(read_text(path), newline='') as f:
        reader = csv.DictReader(f)
        missing = set(MANIFEST_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f'{path}: manifest lacks column(s) {", ".join(sorted(missing))}')
        rows = []
        for lineno, r in enumerate(reader, start=2):
            try:
                row = dict(path=r['path'], num_frames=int(r['num_frames']), fps=float(r['fps']),
                           height=int(r['height']), width=int(r['width']))
            except (TypeError, ValueError):
                raise ValueError(f'{path}: bad manifest row at line {lineno}: {r}') from None
            if not (math.isfinite(row['fps']) and row['fps'] > 0) or min(row['num_frames'], row['height'],
                                                                          row['width']) < 0:
                raise ValueError(f'{path}: bad manifest row at line {lineno} (fps must be a positive number, '
                                 f'frame count and size not negative): {r}')
            rows.append(row)
    return rows


def is_frames_root(path):
    """True if path is a folder with a manifest, or a manifest file itself."""
    return (os.path.isfile(os.path.join(path, MANIFEST_NAME)) if os.path.isdir(path)
            else os.path.basename(path) == MANIFEST_NAME)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # start-of-frame markers


def jpeg_size(data):
    """(height, width) from a JPEG's start-of-frame header (bytes-like), without decoding; None if absent."""
    pos, n = 2, len(data)
    while pos + 9 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _SOF:
            return (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
        elif 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


class FrameClip(Clip):
    """One video's frame folder: `num_frames`, `fps` from the manifest and `read(indices)`."""

    def __init__(self, folder, num_frames, fps, height=None, width=None):
        self.path = folder
        self.num_frames = num_frames
        self.fps = fps
        self.height, self.width = height, width
        if num_frames <= 0:
            raise UnreadableError(f'{folder}: manifest lists no frames')

    def frame_file(self, t):
        """The JPEG file of frame t (0-based)."""
        return os.path.join(self.path, frame_name(t))

    def read(self, indices):
        """Frames at the given 0-based indices -> list of (H, W, 3) BGR uint8."""
        decoded = {}
        for t in set(indices):
            file = self.frame_file(t)
            img = cv2.imread(file, cv2.IMREAD_COLOR)
            if img is None:
                reason = 'missing' if not os.path.exists(file) else 'not a decodable image'
                raise UnreadableError(f'{file}: {reason}')
            decoded[t] = img
        return [decoded[t] for t in indices]

    def read_encoded(self, indices):
        """The JPEG files at the given indices, undecoded -> list of uint8 1-D tensors. Missing,
        empty or truncated files (no JPEG start/end marker) and frames of another size than the
        manifest's (the crops are drawn from it) raise UnreadableError here, in the loader worker, so
        that decoding on the training device meets only whole files of the expected size."""
        out = []
        for t in indices:
            file = self.frame_file(t)
            try:
                data = np.fromfile(file, dtype=np.uint8)
            except OSError as e:
                raise UnreadableError(f'{file}: {e.strerror or e}') from None
            if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8 or data[-2] != 0xFF or data[-1] != 0xD9:
                raise UnreadableError(f'{file}: not a whole JPEG file')
            size = jpeg_size(memoryview(data))
            if size != (self.height, self.width):
                found = 'no frame header' if size is None else f'{size[1]}x{size[0]}'
                raise UnreadableError(f'{file}: {found}, but the manifest says {self.width}x{self.height} '
                                      '(extracted again since? re-run extract_frames.py)')
            out.append(torch.from_numpy(data))
        return out


class FrameSource:
    """Frame folders listed in a manifest: one dataset item per video."""

    def __init__(self, root):
        manifest = root if os.path.isfile(root) else os.path.join(root, MANIFEST_NAME)
        self.root = os.path.dirname(os.path.abspath(manifest))
        self.rows = read_manifest(manifest)
        self.paths = [os.path.join(self.root, r['path']) for r in self.rows]
        self.name = manifest

    def __len__(self):
        return len(self.rows)

    def open(self, i):
        r = self.rows[i]
        return FrameClip(self.paths[i], r['num_frames'], r['fps'], r['height'], r['width'])
