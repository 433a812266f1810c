import cv2
import numpy as np
import pytest

from datasets.synthetic import (coordinate_frame, decode_index, index_frame, make_image_folder,
                                make_video_folder, write_test_video)


def test_index_frames_round_trip_with_noise():
    rng = np.random.default_rng(0)
    for i in (0, 7, 16, 100, 255):
        noisy = index_frame(i).astype(int) + rng.integers(-6, 7, (48, 64, 3))
        assert decode_index(np.clip(noisy, 0, 255).astype(np.uint8)) == i
    with pytest.raises(ValueError):
        index_frame(256)


def test_coordinate_frame_values():
    f = coordinate_frame(5, (10, 20))
    assert f[3, 7].tolist() == [7, 3, 5]


@pytest.mark.parametrize('ext', ['.avi', '.mp4'])
def test_write_test_video_is_readable(tmp_path, ext):
    path = write_test_video(str(tmp_path / f'v{ext}'), 20, size=(32, 48), fps=25)
    cap = cv2.VideoCapture(path)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 20 and cap.get(cv2.CAP_PROP_FPS) == 25
    frames = [cap.read()[1] for _ in range(20)]
    assert [decode_index(f) for f in frames] == list(range(20))
    with pytest.raises(ValueError, match='cannot write'):
        write_test_video(str(tmp_path / 'v.webm'), 2)


def test_make_folders(tmp_path):
    videos = make_video_folder(str(tmp_path / 'v'), 3, 5, content='texture')
    images = make_image_folder(str(tmp_path / 'i'), 3, (30, 40))
    assert len(videos) == len(images) == 3
    assert cv2.imread(images[0]).shape == (30, 40, 3)
