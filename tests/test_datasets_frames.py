import os

import cv2
import numpy as np
import pytest

from datasets import frames
from datasets.sources import UnreadableError
from datasets.synthetic import decode_index, index_frame

ROWS = [dict(path='b/v2', num_frames=3, fps=25.0, height=48, width=64),
        dict(path='a/v1', num_frames=12, fps=29.97, height=256, width=340)]


def test_manifest_round_trip(tmp_path):
    path = str(tmp_path / frames.MANIFEST_NAME)
    frames.write_manifest(path, ROWS)
    assert frames.read_manifest(path) == sorted(ROWS, key=lambda r: r['path'])
    assert os.listdir(tmp_path) == [frames.MANIFEST_NAME]  # no temp file left behind


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='extract_frames.py'):
        frames.read_manifest(str(tmp_path / 'manifest.csv'))
    bad = tmp_path / 'manifest.csv'
    bad.write_text('path,num_frames\na,3\n')
    with pytest.raises(ValueError, match='lacks column'):
        frames.read_manifest(str(bad))
    bad.write_text('path,num_frames,fps,height,width\na,three,30,1,1\n')
    with pytest.raises(ValueError, match='line 2'):
        frames.read_manifest(str(bad))
    for fps in ('nan', 'inf', '-30', '0'):  # the frame gap is scaled by fps: it must be a positive number
        bad.write_text(f'path,num_frames,fps,height,width\na,3,30,1,1\nb,3,{fps},1,1\n')
        with pytest.raises(ValueError, match=f'{bad}: bad manifest row at line 3 .fps must be a positive'):
            frames.read_manifest(str(bad))
    bad.write_text('path,num_frames,fps,height,width\na,-3,30,1,1\n')
    with pytest.raises(ValueError, match='line 2'):
        frames.read_manifest(str(bad))


def test_manifest_saved_with_a_byte_order_mark(tmp_path):
    path = tmp_path / frames.MANIFEST_NAME
    frames.write_manifest(str(path), ROWS)
    path.write_bytes(b'\xef\xbb\xbf' + path.read_bytes())  # as a spreadsheet program saves UTF-8
    assert frames.read_manifest(str(path)) == sorted(ROWS, key=lambda r: r['path'])
    path.write_bytes(path.read_bytes().replace(b'a', b'\xe9', 1))  # latin-1, as an old editor saves it
    with pytest.raises(ValueError, match=r'manifest\.csv: not UTF-8 text'):
        frames.read_manifest(str(path))


def write_frame_folder(root, rel, num_frames):
    folder = os.path.join(root, rel)
    os.makedirs(folder)
    for i in range(num_frames):
        cv2.imwrite(os.path.join(folder, frames.frame_name(i)), index_frame(i))
    return dict(path=rel, num_frames=num_frames, fps=30.0, height=48, width=64)


def test_frame_source_reads_indices(tmp_path):
    rows = [write_frame_folder(str(tmp_path), 'c/v', 20)]
    frames.write_manifest(str(tmp_path / 'manifest.csv'), rows)
    assert frames.is_frames_root(str(tmp_path)) and frames.is_frames_root(str(tmp_path / 'manifest.csv'))
    assert not frames.is_frames_root(str(tmp_path / 'c'))
    source = frames.FrameSource(str(tmp_path))
    with source.open(0) as clip:
        assert (clip.num_frames, clip.fps) == (20, 30.0)
        assert [decode_index(f) for f in clip.read([19, 0, 0, 7])] == [19, 0, 0, 7]
    os.remove(tmp_path / 'c' / 'v' / frames.frame_name(7))
    (tmp_path / 'c' / 'v' / frames.frame_name(8)).write_bytes(b'')
    with source.open(0) as clip:
        with pytest.raises(UnreadableError, match='000008.jpg: missing'):
            clip.read([7])
        with pytest.raises(UnreadableError, match='000009.jpg: not a decodable image'):
            clip.read([8])


@pytest.mark.parametrize('progressive', [False, True])
def test_jpeg_size_reads_the_frame_header(tmp_path, progressive):
    """Baseline (SOF0) and progressive (SOF2) files, with an EXIF-like APP1 segment before the frame
    header: the size equals the decoded array's."""
    image = np.random.default_rng(0).integers(0, 255, (37, 301, 3), dtype=np.uint8)
    ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    data = data.tobytes()
    app1 = b'\xff\xe1' + (2 + 300).to_bytes(2, 'big') + bytes(300)
    for blob in (data, data[:2] + app1 + data[2:]):
        assert frames.jpeg_size(blob) == cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    assert frames.jpeg_size(data[:2] + b'\x00' * 20) is None


def test_encoded_frames_of_another_size_than_the_manifests_are_unreadable(tmp_path):
    rows = [write_frame_folder(str(tmp_path), 'c/v', 4)]
    frames.write_manifest(str(tmp_path / 'manifest.csv'), rows)
    with frames.FrameSource(str(tmp_path)).open(0) as clip:
        assert [len(j) for j in clip.read_encoded([0, 3])] == [os.path.getsize(tmp_path / 'c' / 'v' / frames.frame_name(t))
                                                               for t in (0, 3)]
    h, w = rows[0]['height'], rows[0]['width']
    frames.write_manifest(str(tmp_path / 'manifest.csv'), [dict(rows[0], height=h + 16)])
    with frames.FrameSource(str(tmp_path)).open(0) as clip:
        with pytest.raises(UnreadableError, match=f'000001.jpg: {w}x{h}, but the manifest says {w}x{h + 16}'):
            clip.read_encoded([0])
