import argparse
import os

import cv2
import pytest
import torch
from torch.utils.data import DataLoader

import datasets
from datasets.frames import frame_name, write_manifest
from datasets.synthetic import decode_index, index_frame, make_image_folder, make_video_folder


def args(**kw):
    base = dict(data_path=None, pretext='video', input_size=32, frame_gap=[4, 48],
                repeated_sampling=2, seed=0)
    base.update(kw)
    return argparse.Namespace(**base)


def to_bgr_uint8(view):
    """(3, S, S) uint8 RGB item -> (S, S, 3) BGR uint8."""
    assert view.dtype == torch.uint8
    return view.permute(1, 2, 0).numpy()[..., ::-1]


@pytest.fixture(scope='module')
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('k400')
    make_video_folder(str(root), 4, 90, ext='.avi')
    (root / 'class_0' / 'zero.mp4').write_bytes(b'')
    (root / 'class_1' / 'junk.mkv').write_text('this is not a video\n' * 50)
    return str(root)


def test_public_interface():
    assert datasets.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert datasets.IMAGENET_STD == (0.229, 0.224, 0.225)
    assert len(datasets.demo_video_paths()) == 3


def test_video_folder_gaps_and_bad_files_counted(video_root):
    dataset = datasets.build_pretrain_dataset(args(data_path=video_root, repeated_sampling=3))
    assert len(dataset) == 6
    skipped = 0
    for epoch in range(2):
        keys = [(epoch, i) for i in range(len(dataset))]
        for frames, n_skipped in DataLoader(dataset, sampler=keys, batch_size=3, num_workers=2):
            assert frames.shape == (3, 3, 2, 3, 32, 32)
            skipped += int(n_skipped.sum())
            for f1, f2 in frames.flatten(0, 1):
                assert 4 <= decode_index(to_bgr_uint8(f2)) - decode_index(to_bgr_uint8(f1)) <= 48
    assert skipped >= 4  # each bad file's own item is replaced, every epoch
    assert dataset.stats() == dict(items=6, unreadable=2, short=0, truncated=0)


def test_list_file_and_namespace_defaults(video_root, tmp_path):
    lst = tmp_path / 'train.csv'
    lst.write_text('path,label\n' + ''.join(
        f'{os.path.join(video_root, "class_0", f"video_000{i}.avi")},class_0\n' for i in (0, 2)))
    dataset = datasets.build_pretrain_dataset(argparse.Namespace(data_path=str(lst)))
    frames, n_skipped = dataset[1]
    assert len(dataset) == 2 and frames.shape == (2, 2, 3, 224, 224) and n_skipped == 0


def test_frames_folder_detected_by_manifest(tmp_path):
    folder = tmp_path / 'c' / 'v'
    folder.mkdir(parents=True)
    for i in range(60):
        cv2.imwrite(str(folder / frame_name(i)), index_frame(i))
    write_manifest(str(tmp_path / 'manifest.csv'),
                   [dict(path='c/v', num_frames=60, fps=15.0, height=48, width=64)])
    dataset = datasets.build_pretrain_dataset(args(data_path=str(tmp_path)))
    assert isinstance(dataset.source, datasets.FrameSource)
    for seed in range(5):
        dataset.seed = seed
        for f1, f2 in dataset[0][0]:
            assert 2 <= decode_index(to_bgr_uint8(f2)) - decode_index(to_bgr_uint8(f1)) <= 24  # 15 fps


def test_image_folder_for_crops(tmp_path):
    make_image_folder(str(tmp_path), 3, (60, 80))
    dataset = datasets.build_pretrain_dataset(args(data_path=str(tmp_path), pretext='crop'))
    assert isinstance(dataset.source, datasets.ImageSource) and dataset[2][0].shape == (2, 2, 3, 32, 32)
    with pytest.raises(ValueError, match='use --pretext crop'):
        datasets.build_pretrain_dataset(args(data_path=str(tmp_path)))
    listed = tmp_path / 'images.txt'  # a list of images would train on one-frame "videos"
    listed.write_text(''.join(f'{p}\n' for p in make_image_folder(str(tmp_path / 'more'), 2, (60, 80))))
    with pytest.raises(ValueError, match=r'images.txt: lists images, not videos \(for image crops, give their folder'):
        datasets.build_pretrain_dataset(args(data_path=str(listed)))


def test_demo_set_when_no_path():
    for path in (None, ''):
        dataset = datasets.build_pretrain_dataset(args(data_path=path, pretext='crop'))
        assert len(dataset) == 3 and dataset[2][0].shape == (2, 2, 3, 32, 32)


def test_one_line_errors_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        datasets.build_pretrain_dataset(args(data_path=str(tmp_path / 'missing')))
    with pytest.raises(FileNotFoundError, match='no video files found'):
        datasets.build_pretrain_dataset(args(data_path=str(tmp_path)))
    bad = tmp_path / 'cls'
    bad.mkdir()
    (bad / 'a.mp4').write_bytes(b'')
    (bad / 'b.avi').write_text('nope')
    with pytest.raises(ValueError, match='none of the 2 files is readable') as err:
        datasets.build_pretrain_dataset(args(data_path=str(tmp_path)))
    assert '\n' not in str(err.value) and str(tmp_path) in str(err.value)
    (tmp_path / 'list.json').write_text('[]')
    with pytest.raises(ValueError, match='list.json: expected a folder'):
        datasets.build_pretrain_dataset(args(data_path=str(tmp_path / 'list.json')))
