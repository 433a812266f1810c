"""Reading and atomically writing the files of the evaluation: frames, indexed palette PNGs, CSVs.

Every writer goes through a temporary file in the destination folder and ``os.replace``, so a run
that fails half-way never leaves a truncated file where a good one was.
"""
import os
import tempfile
from contextlib import contextmanager

import numpy as np
from PIL import Image


class InputError(ValueError):
    """A problem with the user's files or arguments; the CLIs print it as one line and exit."""


def default_palette():
    """The 256-colour palette of DAVIS/PASCAL annotations (index bits spread over R, G, B), (768,) uint8."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c = index
        for shift in range(7, -1, -1):
            palette[index] |= np.array([(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1], dtype=np.uint8) << shift
            c >>= 3
    return palette.reshape(-1)


def list_files(folder, ext, what="files"):
    """Sorted paths of the *.ext files in folder; InputError if the folder is missing or has none."""
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no such folder ({what})")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(ext))
    if not names:
        raise InputError(f"{folder}: no *{ext} {what}")
    return [os.path.join(folder, n) for n in names]


def read_list(path, what):
    """The non-empty lines of a list file (sequence or video names); one-line errors if the
    file is missing or empty. what: e.g. 'the DAVIS-2017 list of val sequences'."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: missing ({what})")
    with open(path) as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise InputError(f"{path}: lists nothing ({what})")
    return names


def stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def image_size(path):
    """(height, width) of an image file, read from its header only."""
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None


def read_rgb(path, size=None):
    """An image file as (H, W, 3) uint8; InputError if size (H, W) is given and differs."""
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from None
    if size is not None and rgb.shape[:2] != tuple(size):
        raise InputError(f"{path}: size {rgb.shape[:2]} differs from the video's first frame {tuple(size)}")
    return rgb


def read_indexed_png(path):
    """An indexed (mode 'P' or 'L') PNG as ((H, W) uint8 indices, (768,) uint8 palette: its own, else
    the DAVIS default)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise InputError(f"{path}: not an indexed PNG (mode {im.mode}); expected palette indices")
            palette = im.getpalette() if im.mode == "P" else None
            indices = np.array(im)
    except (OSError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable PNG ({e})") from None
    if palette is None:
        return indices, default_palette()
    return indices, np.asarray(palette + [0] * (768 - len(palette)), dtype=np.uint8)


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it over `path` only if the block succeeds."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_indexed_png(path, indices, palette):
    """Save (H, W) uint8 indices as an indexed PNG with the given (768,) palette, atomically."""
    im = Image.fromarray(np.asarray(indices, dtype=np.uint8), mode="P")
    im.putpalette(np.asarray(palette, dtype=np.uint8).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_csv(path, header, rows, float_format="%.3f"):
    """A CSV with a header line and rows of strings/numbers (floats as float_format), atomically."""
    def cell(v):
        return float_format % v if isinstance(v, (float, np.floating)) else str(v)
    lines = [",".join(header)] + [",".join(cell(v) for v in row) for row in rows]
    write_text(path, "\n".join(lines) + "\n")
