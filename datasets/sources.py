# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Finding the files of a data source, and the error a source raises for a bad one.

A source (video.VideoSource, frames.FrameSource, images.ImageSource) has `paths`
(one per dataset item) and `open(i)`, a context manager giving a clip with
`num_frames`, `fps` and `read(indices) -> list of (H, W, 3) uint8 BGR frames`.
"""
import csv
import os

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.webm', '.mov', '.m4v')
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
_HEADER_NAMES = ('path', 'video', 'video_path', 'filename', 'file', 'youtube_id')


class UnreadableError(Exception):
    """A file that cannot be decoded; its message is '<path>: <reason>'."""


class TruncatedError(UnreadableError):
    """A video whose frames end before the count its header lists: only the first `num_frames`
    decode (a partly downloaded or cut file)."""

    def __init__(self, message, num_frames):
        super().__init__(message)
        self.num_frames = num_frames


class Clip:
    """Base of the clips sources open: a context manager whose close() (nothing by default)
    releases the file."""

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def scan_folder(root, extensions):
    """Sorted paths of files under root (any depth) whose name ends with one of extensions.

    Kinetics / ImageNet layout is root/<class>/<file>; hidden folders are skipped.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f'{root}: no such folder')
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
        found.extend(os.path.join(dirpath, f) for f in filenames
                     if f.lower().endswith(extensions) and not f.startswith('.'))
    return sorted(found)


def read_text(path):
    """A text file's contents: UTF-8, a spreadsheet's byte-order mark dropped; anything else is a
    one-line ValueError naming the file."""
    try:
        with open(path, encoding='utf-8-sig') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start})') from None


def read_path_list(list_file):
    """Paths from a .txt / .csv list: one per line, optional label column ('path,label' or
    'path label'); a header line and '#' comments are skipped; relative paths are taken
    relative to the list's folder. Paths may contain spaces (Kinetics' class folders do): a
    whitespace-separated line is one path when it names a file or ends with a video extension,
    else its last field is the label. Returns (paths, labels) with labels None where absent.
    """
    if not os.path.isfile(list_file):
        raise FileNotFoundError(f'{list_file}: no such list file')
    base = os.path.dirname(os.path.abspath(list_file))
    paths, labels = [], []
    for line in read_text(list_file).splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        path, label = _split_list_line(line, base)
        if not paths and path.lower() in _HEADER_NAMES:
            continue
        paths.append(path if os.path.isabs(path) else os.path.join(base, path))
        labels.append(label)
    return paths, labels


def _split_list_line(line, base):
    """(path, label or None) of one list line; see read_path_list. A comma line is read as CSV (a quoted
    path may hold commas); an unquoted line ending with a video extension is one path, commas and all."""
    if line.startswith('"') or (',' in line and not line.lower().endswith(VIDEO_EXTENSIONS)):
        fields = [f.strip() for f in next(csv.reader([line]))] + ['']
        path, label = fields[0], fields[1]
    elif line.lower().endswith(VIDEO_EXTENSIONS) or os.path.isfile(os.path.join(base, line)):
        path, label = line, ''
    else:
        fields = line.rsplit(None, 1)
        path, label = (fields[0], fields[1]) if len(fields) == 2 else (line, '')
    return path, label or None


def check_file(path):
    """Raise UnreadableError for a missing or zero-byte file (cheap checks before decoding)."""
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise UnreadableError(f'{path}: cannot stat ({e.strerror or e})') from None
    if size == 0:
        raise UnreadableError(f'{path}: zero-byte file')
