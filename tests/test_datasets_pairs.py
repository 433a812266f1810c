import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import cv2

from datasets.pairs import PairDataset, fit_pairs, sample_pair, scaled_gap
from datasets.sources import UnreadableError
from datasets.synthetic import coordinate_frame, decode_index, write_test_video
from datasets.video import VideoSource
from datasets.transforms import denormalize, normalize


class ArrayClip:
    def __init__(self, num_frames, fps, size):
        self.num_frames, self.fps, self.size = num_frames, fps, size

    def read(self, indices):
        return [coordinate_frame(t, self.size) for t in indices]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class ArraySource:
    """In-memory clips of coordinate frames (B = x, G = y, R = frame index); bad items raise."""

    name = 'arrays'

    def __init__(self, lengths, fps=30.0, size=(60, 80), bad=()):
        self.lengths, self.fps, self.size, self.bad = lengths, fps, size, set(bad)
        self.paths = [f'clip{i}' for i in range(len(lengths))]
        self.opened = []

    def __len__(self):
        return len(self.lengths)

    def open(self, i):
        self.opened.append(i)
        if i in self.bad:
            raise UnreadableError(f'clip{i}: corrupt')
        return ArrayClip(self.lengths[i], self.fps, self.size)


def to_uint8_rgb(frames):
    """(..., 3, S, S) uint8 item -> integers 0..255 (R = index, G = y, B = x), through the
    normalisation round trip the training step applies."""
    return (denormalize(normalize(frames)) * 255).round().to(torch.int64)


def test_scaled_gap():
    assert scaled_gap((4, 48), 30) == (4, 48)
    assert scaled_gap((4, 48), 25) == (3, 40)
    assert scaled_gap((4, 48), 60) == (8, 96)
    assert scaled_gap((4, 48), None) == (4, 48)


def test_sample_pair_gap_range_and_short_videos():
    rng = np.random.default_rng(0)
    pairs = [sample_pair(rng, 100, 4, 48) for _ in range(2000)]
    gaps = [f2 - f1 for f1, f2 in pairs]
    assert min(gaps) == 4 and max(gaps) == 48
    assert all(0 <= f1 and f2 < 100 for f1, f2 in pairs)
    assert all(4 <= b - a <= 19 for a, b in (sample_pair(rng, 20, 4, 48) for _ in range(200)))
    assert sample_pair(rng, 3, 4, 48) == (0, 2)
    assert sample_pair(rng, 1, 4, 48) == (0, 0)


def test_item_shape_gap_shared_crop_and_flip():
    dataset = PairDataset(ArraySource([200] * 8), input_size=32, repeated_sampling=3, seed=0)
    flips = set()
    for i in range(len(dataset)):
        frames, n_skipped = dataset[i]
        assert frames.shape == (3, 2, 3, 32, 32) and frames.dtype == torch.uint8
        assert n_skipped == 0
        rgb = to_uint8_rgb(frames)
        for f1, f2 in rgb:
            assert 4 <= int(f2[0, 0, 0]) - int(f1[0, 0, 0]) <= 48  # index channel: the gap
            assert torch.equal(f1[1:], f2[1:])  # same crop and flip: same y and x everywhere
            flips.add(bool(f1[2, 0, 0] > f1[2, 0, -1]))
    assert flips == {False, True}


def test_same_seed_same_pairs_and_epoch_changes_them():
    make = lambda seed: PairDataset(ArraySource([120] * 4), input_size=16, seed=seed)
    a, b = make(7), make(7)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(4))
    assert not torch.equal(a[0][0], make(8)[0][0])
    assert not torch.equal(a[0][0], b[(1, 0)][0])
    assert torch.equal(a[(1, 3)][0], b[(1, 3)][0])


def test_items_independent_of_worker_count():
    dataset = PairDataset(ArraySource([90] * 6, bad=[2]), input_size=16, seed=3)
    keys = [(5, i) for i in range(len(dataset))]
    batches = [torch.cat([f for f, _ in DataLoader(dataset, sampler=keys, batch_size=2, num_workers=w)])
               for w in (0, 2)]
    assert torch.equal(*batches)


def test_unreadable_files_skipped_counted_and_logged_once(caplog):
    source = ArraySource([90] * 10, bad=[1, 4, 5])
    dataset = PairDataset(source, input_size=16, repeated_sampling=2, seed=0)
    with caplog.at_level(logging.WARNING, logger='siammae.datasets.pairs'):
        for epoch in range(3):
            items = [dataset[(epoch, i)] for i in range(len(dataset))]
            assert all(f.shape == (2, 2, 3, 16, 16) for f, _ in items)
            assert sum(n for _, n in items) >= 3
    assert items[0][1] == 0 and items[1][1] >= 1
    logged = [r.getMessage() for r in caplog.records if 'corrupt' in r.getMessage()]
    assert sorted(logged) == [f'skipping unreadable file (replaced by another sample): clip{i}: corrupt'
                              for i in (1, 4, 5)]
    assert source.opened.count(1) == 1  # a known-bad file is not opened again
    assert dataset.stats() == dict(items=10, unreadable=3, short=0, truncated=0)


def test_worker_flags_reach_stats():
    dataset = PairDataset(ArraySource([90, 2, 90, 3], bad=[2]), input_size=16)
    for _ in DataLoader(dataset, batch_size=2, num_workers=2):
        pass
    assert dataset.stats() == dict(items=4, unreadable=1, short=2, truncated=0)


def test_short_video_uses_largest_gap_and_is_counted(caplog):
    dataset = PairDataset(ArraySource([3]), input_size=16, repeated_sampling=2)
    with caplog.at_level(logging.WARNING):
        frames, _ = dataset[0]
        dataset[0]
    rgb = to_uint8_rgb(frames)
    assert (rgb[:, 0, 0] == 0).all() and (rgb[:, 1, 0] == 2).all()
    assert dataset.stats()['short'] == 1
    assert sum('fewer than the minimum gap' in r.getMessage() for r in caplog.records) == 1


def test_crop_pretext_local_inside_global():
    dataset = PairDataset(ArraySource([10] * 4, size=(120, 160)), pretext='crop', input_size=32,
                          repeated_sampling=4)
    for i in range(4):
        frames, _ = dataset[i]
        assert frames.shape == (4, 2, 3, 32, 32)
        for g, loc in to_uint8_rgb(frames):
            assert int(g[0, 0, 0]) == int(loc[0, 0, 0])  # both views from one frame
            for c in (1, 2):  # y, x
                assert g[c].min() - 1 <= loc[c].min() and loc[c].max() <= g[c].max() + 1


@pytest.mark.parametrize('scale,span', [((1.0, 1.0), (150, 160)), ((0.1, 0.1), (30, 60))])
def test_crop_pretext_global_view_covers_the_crop_scale(scale, span):
    """The global view's x extent (channel B of coordinate frames): the whole 160-px width at scale 1,
    about sqrt(0.1 * 120 * 160 * 4/3) ~ 51 px or less at scale 0.1."""
    dataset = PairDataset(ArraySource([10] * 3, size=(120, 160)), pretext='crop', input_size=32,
                          repeated_sampling=4, crop_scale=scale)
    assert dataset.crop_scale == scale and f'crop_scale={scale}' in repr(dataset)
    for i in range(3):
        for g, _ in to_uint8_rgb(dataset[i][0]):
            assert span[0] <= int(g[2].max()) - int(g[2].min()) + 1 <= span[1]


def test_crop_scale_defaults_to_cropmaes_per_source_and_is_checked(tmp_path):
    from datasets.images import ImageSource
    from datasets.synthetic import make_image_folder
    make_image_folder(str(tmp_path), 2)
    assert PairDataset(ImageSource(str(tmp_path)), pretext='crop').crop_scale == (0.1, 1.0)  # its ImageNet runs
    assert PairDataset(ArraySource([10]), pretext='crop').crop_scale == (0.5, 1.0)  # its Kinetics runs
    for bad in [(0.0, 1.0), (0.6, 0.5), (0.5, 1.5)]:
        with pytest.raises(ValueError, match=r'crop_scale must satisfy 0 < MIN <= MAX <= 1'):
            PairDataset(ArraySource([10]), pretext='crop', crop_scale=bad)


def test_errors_empty_wholly_unreadable_and_bad_args():
    with pytest.raises(ValueError, match='arrays: dataset is empty'):
        PairDataset(ArraySource([]))
    dataset = PairDataset(ArraySource([50, 50], bad=[0, 1]))
    with pytest.raises(ValueError,
                       match=r'arrays: none of the 2 files is readable \(first: clip0: corrupt\)'):
        dataset.check()
    with pytest.raises(RuntimeError, match='unreadable files in a row'):
        dataset[0]
    with pytest.raises(ValueError, match='pretext'):
        PairDataset(ArraySource([5]), pretext='audio')
    with pytest.raises(ValueError, match='frame_gap'):
        PairDataset(ArraySource([5]), frame_gap=(10, 4))


def test_os_and_decoder_errors_are_skipped_with_one_line_reason(caplog):
    class FlakySource(ArraySource):
        def open(self, i):
            if i == 0:
                raise OSError('Input/output error\nsecond line')
            return super().open(i)

    dataset = PairDataset(FlakySource([40, 40]), input_size=16)
    with caplog.at_level(logging.WARNING, logger='siammae.datasets.pairs'):
        frames, n_skipped = dataset[0]
    assert n_skipped >= 1 and frames.shape == (2, 2, 3, 16, 16)
    assert caplog.records[0].getMessage().endswith('clip0: OSError: Input/output error')


def test_fit_pairs_moves_only_pairs_past_the_end_keeping_their_gap():
    rng = np.random.default_rng(0)
    for _ in range(500):
        k = int(rng.integers(2, 60))
        f1 = int(rng.integers(0, 100))
        f2 = f1 + int(rng.integers(1, 50))
        g1, g2 = fit_pairs([f1, f2], k)
        assert 0 <= g1 < g2 < k
        if f2 < k:
            assert (g1, g2) == (f1, f2)
        elif f2 - f1 < k:
            assert g2 - g1 == f2 - f1 and g1 % (k - (f2 - f1)) == f1 % (k - (f2 - f1))
        else:
            assert (g1, g2) == (0, k - 1)


def test_truncated_video_gives_pairs_from_its_decodable_frames(tmp_path, caplog):
    """A video cut short (header: 120 frames) is neither lost nor fatal: its pairs come from the frames
    it holds, and an item is the same whether the truncation was known before reading it or not."""
    path = write_test_video(str(tmp_path / 'cls' / 'cut.avi'), 120, fps=30)
    with open(path, 'r+b') as f:
        f.truncate(len(open(path, 'rb').read()) // 3)
    cap = cv2.VideoCapture(path)
    header, decodable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.grab():
        decodable += 1
    cap.release()
    assert header == 120 and 10 < decodable < 60

    def dataset():
        return PairDataset(VideoSource([path]), input_size=32, frame_gap=(4, 48), repeated_sampling=4)

    first, second = dataset(), dataset()
    with caplog.at_level(logging.WARNING):
        items = [first[(epoch, 0)] for epoch in range(6)]
    assert sum('frames end at' in r.getMessage() for r in caplog.records) == 1  # logged once
    reversed_items = [second[(epoch, 0)] for epoch in reversed(range(6))][::-1]
    for (frames, skipped), (again, _) in zip(items, reversed_items):
        assert skipped == 0 and torch.equal(frames, again)
        for f1, f2 in frames.numpy():
            t1, t2 = (decode_index(f.transpose(1, 2, 0)[..., ::-1]) for f in (f1, f2))
            assert 0 <= t1 < t2 < decodable and 4 <= t2 - t1 <= 48
    assert first.stats() == second.stats() == dict(items=1, unreadable=0, short=0, truncated=1)


def test_loader_workers_do_not_hang_after_opencv_ran_threaded_in_the_parent(tmp_path):
    """A worker forked while OpenCV's thread pool ran used to hang in cv2.setNumThreads; in its own
    process, so that a hang fails this test by timeout instead of stopping the suite."""
    script = tmp_path / 'fork.py'
    script.write_text(
        'import numpy as np, cv2, torch\n'
        'from torch.utils.data import DataLoader\n'
        'from datasets.pairs import PairDataset\n'
        'from datasets.synthetic import make_frames_folder\n'
        'from datasets.frames import FrameSource\n'
        'cv2.setNumThreads(4)\n'
        'img = np.random.randint(0, 255, (1500, 1500, 3), np.uint8)\n'
        'for _ in range(5): cv2.resize(img, (700, 700))  # the parent\'s pool runs\n'
        f'dataset = PairDataset(FrameSource(make_frames_folder({str(tmp_path / "f")!r}, 2, 8, size=(48, 64))),\n'
        '                      input_size=32, frame_gap=(2, 4))\n'
        'batch, _ = next(iter(DataLoader(dataset, batch_size=2, num_workers=1)))\n'
        'print(tuple(batch.shape))\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         cwd=root, env={**os.environ, 'PYTHONPATH': root})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '(2, 2, 2, 3, 32, 32)'


def test_repeated_sampling_draws_a_new_frame_pair_for_each_repeat():
    """Kills P1/P4 (the R pairs cut from one frame pair): over R = 6 pairs of a 200-frame video the
    first frames are not all the same."""
    frames, _ = PairDataset(ArraySource([200]), input_size=16, repeated_sampling=6, seed=0)[0]
    firsts = {int(frames[k, 0, 0, 0, 0]) for k in range(6)}  # R channel, uint8 RGB: the frame index
    assert len(firsts) > 1


def test_unreadable_item_is_replaced_by_a_random_item():
    """Kills P3 (always the next index replaces it, so that neighbour is over-sampled)."""
    source = ArraySource([60] * 20, bad=[0])
    dataset = PairDataset(source, input_size=16, seed=0)
    replacements = []
    for epoch in range(8):
        source.opened.clear()
        _, n_skipped = dataset[(epoch, 0)]
        assert n_skipped == 1
        replacements.append(source.opened[-1])
    assert 0 not in replacements and len(set(replacements)) > 1
