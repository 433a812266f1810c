import csv
import os
import subprocess
import sys

import cv2
import pytest

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
    assert len([f for f in os.listdir(b) if f.endswith('.jpg')]) == 100
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
    assert not os.path.exists(partial) and len(os.listdir(os.path.join(dst, 'walk', 'b'))) == 101  # + record
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


def truncate_avi(src, dst, keep):
    """A copy of an AVI cut after `keep` of its bytes (header kept: the frame count still says all)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(src, 'rb') as f:
        data = f.read()
    with open(dst, 'wb') as f:
        f.write(data[:keep(data)])


def test_resume_keeps_the_record_of_finished_videos_and_refuses_other_options(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    full = write_test_video(str(tmp_path / 'full.avi'), 200, size=(48, 64), fps=30)
    truncate_avi(full, os.path.join(src, 'cut', 't40.avi'), lambda data: int(len(data) * 0.4))
    write_test_video(os.path.join(src, 'walk', 'b.mp4'), 200, size=(48, 64), fps=60)
    assert run(src, dst, '--fps', '15', '--min_seconds', '1') == dict(done=0, extracted=1, truncated=1, skipped=0)
    rows = read_manifest(os.path.join(dst, 'manifest.csv'))
    assert 'decoded' in report(dst)['t40.avi']
    # resumed: the truncated video stays in the report, the rows keep the rate they were written at
    assert run(src, dst, '--fps', '15', '--min_seconds', '1') == dict(done=2, extracted=0, truncated=0, skipped=0)
    assert read_manifest(os.path.join(dst, 'manifest.csv')) == rows
    assert [r['fps'] for r in rows] == [15.0, 15.0] and 'decoded' in report(dst)['t40.avi']
    with pytest.raises(ValueError, match=r'extracted with --fps 15.0 \(now 30.0\)'):
        run(src, dst, '--min_seconds', '1')  # the default --fps 30 would mislabel 15-fps frames


def test_a_video_without_decodable_frames_is_skipped_with_no_minimum_length(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    full = write_test_video(str(tmp_path / 'full.avi'), 200, size=(48, 64), fps=30)
    truncate_avi(full, os.path.join(src, 'cut', 't0.avi'), lambda data: data.find(b'movi') + 24)
    write_test_video(os.path.join(src, 'walk', 'a.avi'), 40, size=(48, 64), fps=30)
    counts = run(src, dst, '--min_seconds', '0')
    assert counts['extracted'] == 1 and counts['skipped'] + counts['truncated'] == 1
    assert [r['path'] for r in read_manifest(os.path.join(dst, 'manifest.csv'))] == ['walk/a']
    assert not os.path.exists(os.path.join(dst, 'cut', 't0'))


def test_extracting_no_video_at_all_is_an_error_pointing_at_the_report(tmp_path):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    write_test_video(os.path.join(src, 'walk', 'a.avi'), 40, size=(48, 64), fps=30)  # 1.3 s: under 3
    with pytest.raises(ValueError, match=r'videos: no video was extracted \(1 skipped; why: .*extract_report.csv\)'):
        run(src, dst)
    assert 'too short: 1.33 s < 3 s' in open(os.path.join(dst, 'extract_report.csv')).read()


def test_a_list_of_videos_in_other_folders_keeps_their_names_apart(tmp_path):
    for split, n in (('split1', 40), ('split2', 50)):
        write_test_video(str(tmp_path / 'data' / split / 'cls' / 'v.avi'), n, size=(48, 64), fps=30)
    (tmp_path / 'lists').mkdir()
    lst = tmp_path / 'lists' / 'train.txt'
    lines = [str(tmp_path / 'data' / s / 'cls' / 'v.avi') for s in ('split1', 'split2', 'split1')]
    lst.write_text('\n'.join(lines) + '\n')  # the first video listed twice
    dst = str(tmp_path / 'frames')
    assert run(str(lst), dst, '--min_seconds', '1') == dict(done=0, extracted=2, truncated=0, skipped=0)
    rows = read_manifest(os.path.join(dst, 'manifest.csv'))
    assert [(r['path'], r['num_frames']) for r in rows] == [('split1/cls/v', 40), ('split2/cls/v', 50)]


def test_a_folder_finished_before_records_existed_is_measured_again(tmp_path):
    """A frames folder written by an earlier version (no .extract.json) counts as done: its row is rebuilt
    from its JPEGs and the video's rate."""
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    make_sources(src)
    run(src, dst)
    rows = read_manifest(os.path.join(dst, 'manifest.csv'))
    for rel in ('walk/a', 'walk/b'):
        os.remove(os.path.join(dst, rel, extract_frames.RECORD_NAME))
    assert run(src, dst)['done'] == 2
    assert read_manifest(os.path.join(dst, 'manifest.csv')) == rows


def test_short_side_zero_keeps_the_frames_size_and_a_negative_one_is_refused(tmp_path, capsys):
    src, dst = str(tmp_path / 'videos'), str(tmp_path / 'frames')
    write_test_video(os.path.join(src, 'walk', 'a.avi'), 100, size=(48, 64), fps=25)
    run(src, dst, '--short_side', '0')
    (row,) = read_manifest(os.path.join(dst, 'manifest.csv'))
    assert (row['height'], row['width']) == (48, 64)
    assert cv2.imread(os.path.join(dst, 'walk', 'a', frame_name(0))).shape[:2] == (48, 64)
    with pytest.raises(SystemExit):
        run(src, str(tmp_path / 'other'), '--short_side', '-1')
    assert 'argument --short_side: must be at least 0, got -1' in capsys.readouterr().err
