# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Video files decoded with OpenCV, reading only the frames asked for.

Frames are reached by grab() (decode without colour conversion) when close ahead and by
a CAP_PROP_POS_FRAMES seek (keyframe + decode forward) when far; the clip is never
read whole. The decoder runs single-threaded: parallelism comes from loader workers.
"""
import math
import os

import cv2

from .sources import (VIDEO_EXTENSIONS, Clip, TruncatedError, UnreadableError, check_file, read_path_list,
                      scan_folder)

# A bad video is reported once, in one line naming it (sources.UnreadableError, counted and skipped);
# FFmpeg's and OpenCV's own lines about it are silenced unless their variables are set in the environment.
if "OPENCV_FFMPEG_LOGLEVEL" not in os.environ:
    os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"  # AV_LOG_QUIET, read when FFmpeg first opens a file
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

SEEK_AFTER = 64  # frames ahead beyond which seeking (keyframe + decode) tends to beat grab()
DEFAULT_FPS = 30.0


class VideoClip(Clip):
    """An opened video file: `num_frames`, `fps`, `height`, `width` and `read(indices)`."""

    def __init__(self, path):
        check_file(path)
        self.path = path
        self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not self.cap.isOpened():
            self.close()
            raise UnreadableError(f'{path}: not a readable video (OpenCV/FFmpeg cannot open it)')
        self.num_frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 1.0 <= fps <= 1000.0 else DEFAULT_FPS
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self._pos = 0  # index of the frame the next grab() decodes
        if self.num_frames <= 0:
            self.num_frames = self._count_frames()
        if self.num_frames <= 0:
            self.close()
            raise UnreadableError(f'{path}: video has no decodable frames')

    def _count_frames(self):
        """Frame count by decoding from the start, for containers whose header has none (some
        .webm/.mkv) or lists more than the file holds."""
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        n = 0
        while self.cap.grab():
            n += 1
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._pos = 0
        return n

    def read(self, indices):
        """Frames at the given indices (any order, repeats allowed) -> list of (H, W, 3) BGR uint8."""
        decoded = {}
        for t in sorted(set(indices)):
            if t < self._pos or t - self._pos > SEEK_AFTER:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, t)
                self._pos = t
            while self._pos < t and self.cap.grab():
                self._pos += 1
            ok, frame = self.cap.read()
            if not ok or frame is None:
                self._raise_unreadable(t)
            self._pos = t + 1
            decoded[t] = frame
        return [decoded[t] for t in indices]

    def _raise_unreadable(self, t):
        """Frame t does not decode: TruncatedError when the frames just end earlier than the header
        says (all frames before that decode), UnreadableError otherwise."""
        decodable = self._count_frames()
        if 0 < decodable <= t:
            raise TruncatedError(f'{self.path}: frames end at {decodable} of the {self.num_frames} '
                                 'the header lists (truncated file)', decodable)
        raise UnreadableError(f'{self.path}: cannot decode frame {t} of {self.num_frames} (corrupt)')

    def close(self):
        self.cap.release()


class VideoSource:
    """Video files: one dataset item per file."""

    def __init__(self, paths, labels=None, name='videos'):
        self.paths = list(paths)
        self.labels = labels
        self.name = name

    @classmethod
    def from_folder(cls, root):
        """Kinetics layout root/<class>/<video>.mp4|.avi|.mkv|.webm (any depth)."""
        paths = scan_folder(root, VIDEO_EXTENSIONS)
        labels = [os.path.basename(os.path.dirname(p)) for p in paths]
        return cls(paths, labels, name=root)

    @classmethod
    def from_list(cls, list_file):
        """A .txt/.csv of video paths, one per line, optional label column."""
        paths, labels = read_path_list(list_file)
        return cls(paths, labels, name=list_file)

    def __len__(self):
        return len(self.paths)

    def open(self, i):
        return VideoClip(self.paths[i])
