# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""An image folder (ImageNet layout root/<class>/<image>.jpg) as a source of one-frame clips."""
import os

import cv2

from .sources import IMAGE_EXTENSIONS, Clip, UnreadableError, check_file, scan_folder


class ImageClip(Clip):
    """One image seen as a clip of one frame: `num_frames` = 1, `read(indices)`."""

    num_frames = 1
    fps = None

    def __init__(self, path):
        check_file(path)
        self.path = path
        self.image = cv2.imread(path, cv2.IMREAD_COLOR)
        if self.image is None:
            raise UnreadableError(f'{path}: not a decodable image')

    def read(self, indices):
        """Every index reads the image: list of (H, W, 3) BGR uint8 (the same array)."""
        return [self.image for _ in indices]


class ImageSource:
    """Image files: one dataset item per image."""

    def __init__(self, root):
        self.paths = scan_folder(root, IMAGE_EXTENSIONS)
        self.labels = [os.path.basename(os.path.dirname(p)) for p in self.paths]
        self.name = root

    def __len__(self):
        return len(self.paths)

    def open(self, i):
        return ImageClip(self.paths[i])
