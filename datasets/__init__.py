# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Pre-training data: frame pairs from videos or extracted frames, crop pairs from images.

Every item is (frames, n_skipped): frames a uint8 RGB tensor (R, 2, 3, S, S); `normalize` turns it
into the ImageNet-normalised float32 input of the model (on the training device).
This package yields tensors only; it imports nothing from models, eval or main scripts (from util only
the ImageNet statistics, util.image).
"""
from .build import build_pretrain_dataset, build_source
from .demo import demo_video_paths
from .device_decode import EncodedPairs, device_batches, to_device
from .frames import FrameSource, read_manifest, write_manifest
from .images import ImageSource
from .pairs import PairDataset
from .sources import UnreadableError
from .transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from .video import VideoSource

__all__ = ['build_pretrain_dataset', 'build_source', 'demo_video_paths', 'EncodedPairs', 'device_batches',
           'to_device', 'FrameSource', 'read_manifest', 'write_manifest', 'ImageSource', 'PairDataset',
           'UnreadableError', 'IMAGENET_MEAN', 'IMAGENET_STD', 'denormalize', 'normalize', 'VideoSource']
