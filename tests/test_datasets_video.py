import os
import shutil
import subprocess
import sys

import pytest

from datasets import video
from datasets.sources import UnreadableError
from datasets.synthetic import decode_index, write_test_video


@pytest.fixture(scope='module')
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp('videos')
    return {ext: write_test_video(str(root / 'cls' / f'v{ext}'), 150, fps=25)
            for ext in ('.avi', '.mp4')}


@pytest.mark.parametrize('ext', ['.avi', '.mp4'])
def test_read_exact_frames_in_any_order(clips, ext):
    indices = [140, 3, 3, 70, 0, 149, 71]  # backwards, repeats, short and long jumps
    with video.VideoClip(clips[ext]) as clip:
        assert (clip.num_frames, clip.fps, clip.height, clip.width) == (150, 25, 48, 64)
        assert [decode_index(f) for f in clip.read(indices)] == indices


class CountingCapture:
    """Wraps a cv2.VideoCapture, counting the frames our code asks it to decode."""

    def __init__(self, cap):
        self.cap, self.decoded = cap, 0

    def grab(self):
        self.decoded += 1
        return self.cap.grab()

    def read(self):
        self.decoded += 1
        return self.cap.read()

    def set(self, *args):
        return self.cap.set(*args)

    def release(self):
        self.cap.release()


def test_read_seeks_far_and_grabs_near(clips):
    with video.VideoClip(clips['.mp4']) as clip:
        clip.cap = CountingCapture(clip.cap)
        assert [decode_index(f) for f in clip.read([104, 100])] == [104, 100]
        assert clip.cap.decoded == 5  # seek to 100, read, grab 101..103, read 104
    with video.VideoClip(clips['.mp4']) as clip:
        clip.cap = CountingCapture(clip.cap)
        clip.read([20])
        assert clip.cap.decoded == 21  # near the start: grab, no seek


def test_bad_files_raise_unreadable(tmp_path, clips):
    zero = tmp_path / 'zero.mp4'
    zero.write_bytes(b'')
    text = tmp_path / 'text.mp4'
    text.write_text('not a video ' * 100)
    with pytest.raises(UnreadableError, match='zero-byte'):
        video.VideoClip(str(zero))
    with pytest.raises(UnreadableError, match='not a readable video'):
        video.VideoClip(str(text))
    truncated = tmp_path / 'truncated.avi'
    shutil.copy(clips['.avi'], truncated)
    with open(truncated, 'r+b') as f:
        f.truncate(truncated.stat().st_size // 3)
    with pytest.raises(UnreadableError, match=str(truncated)):
        with video.VideoClip(str(truncated)) as clip:
            clip.read([140])


def test_a_cut_mp4_says_one_line_unless_ffmpeg_logging_is_asked_for(clips, tmp_path):
    """Half an MP4 (no moov atom): only UnreadableError's message; FFmpeg and OpenCV speak when the
    user sets their variables."""
    cut = tmp_path / 'cut.mp4'
    data = open(clips['.mp4'], 'rb').read()
    cut.write_bytes(data[:len(data) // 2])
    code = ('from datasets import video\n'
            'try:\n    video.VideoClip(%r)\nexcept video.UnreadableError as e:\n    print(e)\n' % str(cut))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def output_of(**env):
        env = {k: v for k, v in os.environ.items() if not k.startswith('OPENCV_')} | env
        run = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True,
                             timeout=60)
        return (run.stdout + run.stderr).splitlines()

    assert output_of() == [f'{cut}: not a readable video (OpenCV/FFmpeg cannot open it)']
    lines = output_of(OPENCV_FFMPEG_LOGLEVEL='16')  # AV_LOG_ERROR
    assert len(lines) > 1 and any('moov atom not found' in line for line in lines)


def test_video_source_from_folder_and_list(clips, tmp_path):
    folder = video.VideoSource.from_folder(os.path.dirname(os.path.dirname(clips['.avi'])))
    assert len(folder) == 2 and folder.labels == ['cls', 'cls']
    lst = tmp_path / 'list.txt'
    lst.write_text(f'{clips[".mp4"]} 3\n')
    source = video.VideoSource.from_list(str(lst))
    assert source.paths == [clips['.mp4']] and source.labels == ['3']
    with source.open(0) as clip:
        assert clip.num_frames == 150
