# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Small generated videos, frames and images for tests and benchmarks (OpenCV only).

Index frames are one flat colour that encodes the frame index (robust to lossy codecs and
to any crop): R = 16 * (i % 16) + 8, G = 16 * (i // 16) + 8, B = 128 (i < 256).
Coordinate frames (exact arrays, no codec) encode pixel position: B = x, G = y, R = index.
"""
import os

import cv2
import numpy as np

from .frames import JPEG_QUALITY, MANIFEST_NAME, frame_name, write_manifest

FOURCC = {'.mp4': 'mp4v', '.avi': 'MJPG', '.mkv': 'MJPG', '.mov': 'mp4v'}


def index_color(i):
    """BGR colour of index frame i (0 <= i < 256)."""
    if not 0 <= i < 256:
        raise ValueError(f'index frames encode 0..255, got {i}')
    return 128, 16 * (i // 16) + 8, 16 * (i % 16) + 8


def decode_index(frame_bgr):
    """Frame index from an index frame (H, W, 3) BGR uint8, after any crop or codec."""
    mean = frame_bgr.reshape(-1, 3).astype(np.float64).mean(0)
    return int(round((mean[1] - 8) / 16)) * 16 + int(round((mean[2] - 8) / 16))


def index_frame(i, size=(48, 64)):
    frame = np.empty((size[0], size[1], 3), np.uint8)
    frame[:] = index_color(i)
    return frame


def coordinate_frame(i, size=(120, 160)):
    """(H, W, 3) BGR uint8 with B = x, G = y, R = i (H, W <= 256)."""
    h, w = size
    if h > 256 or w > 256:
        raise ValueError(f'coordinate frames are at most 256 x 256, got {size}')
    frame = np.empty((h, w, 3), np.uint8)
    frame[..., 0] = np.arange(w, dtype=np.uint8)[None, :]
    frame[..., 1] = np.arange(h, dtype=np.uint8)[:, None]
    frame[..., 2] = i
    return frame


def textured_frames(num_frames, size=(256, 340), seed=0):
    """Natural-ish frames for benchmarks: a panning textured background and moving boxes."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 110 + 60 * np.sin(xx / (17 + 7 * rng.random()))[..., None] * np.array([1.0, 0.6, 0.3])
    base = base + 40 * np.cos(yy / 23.0)[..., None] + rng.normal(0, 12, (h, w, 3))
    background = np.clip(base, 0, 255).astype(np.uint8)
    colors = rng.integers(0, 256, (3, 3))
    bh, bw = h // 5, w // 6
    for i in range(num_frames):
        frame = np.roll(background, 2 * i, axis=1)
        for k in range(3):
            y = int((k * 0.3 * h + i * (2 + k)) % (h - bh))
            x = int((k * 0.25 * w + i * (3 + k)) % (w - bw))
            frame[y:y + bh, x:x + bw] = colors[k]
        yield frame


def write_video(path, frames, fps=30):
    """Write (H, W, 3) BGR uint8 frames with OpenCV; codec from the extension (.mp4: mp4v,
    .avi/.mkv: MJPG). Returns path."""
    frames = list(frames)
    ext = os.path.splitext(path)[1].lower()
    if ext not in FOURCC:
        raise ValueError(f'{path}: cannot write {ext or "extension-less"} files; use {sorted(FOURCC)}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC[ext]), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f'{path}: OpenCV cannot open a video writer')
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def write_test_video(path, num_frames, size=(48, 64), fps=30, content='index', seed=0):
    """A small readable video of index frames (content='index') or textured frames
    (content='texture'). size is (H, W). Returns path."""
    if content == 'texture':
        return write_video(path, textured_frames(num_frames, size, seed), fps)
    return write_video(path, (index_frame(i, size) for i in range(num_frames)), fps)


def make_video_folder(root, num_videos, num_frames, size=(48, 64), fps=30, ext='.avi',
                      num_classes=2, content='index'):
    """Kinetics-layout folder root/class_<k>/video_<n><ext>; returns the sorted video paths."""
    paths = [os.path.join(root, f'class_{n % num_classes}', f'video_{n:04d}{ext}')
             for n in range(num_videos)]
    for n, p in enumerate(paths):
        write_test_video(p, num_frames, size, fps, content, seed=n)
    return sorted(paths)


def make_image_folder(root, num_images, size=(120, 160), num_classes=2):
    """ImageNet-layout folder of textured JPEGs; returns the sorted image paths."""
    paths = []
    for n, frame in enumerate(textured_frames(num_images, size)):
        p = os.path.join(root, f'class_{n % num_classes}', f'image_{n:04d}.jpg')
        os.makedirs(os.path.dirname(p), exist_ok=True)
        cv2.imwrite(p, frame)
        paths.append(p)
    return sorted(paths)


def make_frames_folder(root, num_videos, num_frames, size=(96, 128), fps=30.0):
    """Pre-extracted-frames layout root/class_<k>/video_<n>/000001.jpg ... with root/manifest.csv,
    textured frames saved as extract_frames.py saves frames (JPEG_QUALITY); returns root."""
    rows = []
    for n in range(num_videos):
        rel = os.path.join(f'class_{n % 2}', f'video_{n:04d}')
        os.makedirs(os.path.join(root, rel), exist_ok=True)
        for t, frame in enumerate(textured_frames(num_frames, size, seed=n)):
            cv2.imwrite(os.path.join(root, rel, frame_name(t)), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        rows.append(dict(path=rel, num_frames=num_frames, fps=fps, height=size[0], width=size[1]))
    write_manifest(os.path.join(root, MANIFEST_NAME), rows)
    return root
