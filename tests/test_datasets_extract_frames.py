import csv
import os
import subprocess
import sys

import cv2

from datasets import extract_frames
from datasets.frames import frame_name, read_manifest
from datasets.synthetic import decode_index, write_test_video

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_sources(root):
    write_test_video(os.path.join(root, 'walk', 'a.avi'), 100, size=(48, 64), fps=25)
    write_test_video(os.path.join(root, 'walk', 'b.mp4'), 200, size=(48, 64), fps=60)
    write_test_video(os.path.join(root, 'run', 'short.avi'), 30, fps=30)
    os.makedirs(os.path.join(root, 'run'), exist_ok=True)
    open(os.path.join(root, 'run', 'zero.mp4'), 'wb').close()
    with open(os.path.join(root, 'run', 'text.mkv'), 'w') as f:
        f.write('not a video\n' * 100)


def run(src, dst, *extra):
    parser = extract_frames.get_args_parser()
    return extract_frames.main(parser.parse_args(
        ['--src', src, '--dst', dst, '--short_side', '32', '--workers', '1', *extra]))


def report(dst):
    with open(os.path.join(dst, extract_frames.REPORT_NAME)) as f:
        return {os.path.basename(r['path']): r['reason'] for r in csv.DictReader(f)}


def test_extract_manifest_resample_and_report(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    make_sources(src)
    counts = run(src, dst)
    assert counts == dict(done=0, extracted=2, truncated=0, skipped=3)
    rows = read_manifest(os.path.join(dst, 'manifest.csv'))
    assert rows == [dict(path='walk/a', num_frames=100, fps=25.0, height=32, width=43),
                    dict(path='walk/b', num_frames=100, fps=30.0, height=32, width=43)]
    b = os.path.join(dst, 'walk', 'b')
    assert len(os.listdir(b)) == 100
    assert [decode_index(cv2.imread(os.path.join(b, frame_name(i)))) for i in (0, 1, 99)] == [0, 2, 198]
    reasons = report(dst)
    assert reasons['short.avi'].startswith('too short: 1.00 s < 3 s')
    assert reasons['zero.mp4'] == 'zero-byte file'
    assert 'not a readable video' in reasons['text.mkv']


def test_resume_skips_finished_and_redoes_half_written(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    make_sources(src)
    run(src, dst)
    first = os.path.join(dst, 'walk', 'a', frame_name(0))
    mtime = os.path.getmtime(first)
    partial = os.path.join(dst, 'walk', '.b.partial')
    os.rename(os.path.join(dst, 'walk', 'b'), partial)  # as if killed before the rename
    os.remove(os.path.join(partial, frame_name(50)))
    counts = run(src, dst)
    assert counts == dict(done=1, extracted=1, truncated=0, skipped=3)
    assert os.path.getmtime(first) == mtime
    assert not os.path.exists(partial) and len(os.listdir(os.path.join(dst, 'walk', 'b'))) == 100
    assert len(read_manifest(os.path.join(dst, 'manifest.csv'))) == 2


def test_runs_as_a_script_with_workers(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    make_sources(src)
    out = subprocess.run([sys.executable, 'datasets/extract_frames.py', '--src', src, '--dst', dst,
                          '--workers', '2', '--min_seconds', '1'],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert '3 videos in' in out.stdout and 'ETA' in out.stderr
    assert len(read_manifest(os.path.join(dst, 'manifest.csv'))) == 3
