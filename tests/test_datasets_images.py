import pytest

from datasets.images import ImageSource
from datasets.sources import UnreadableError
from datasets.synthetic import make_image_folder


def test_image_source(tmp_path):
    paths = make_image_folder(str(tmp_path), 3, (30, 40))
    (tmp_path / 'class_0' / 'broken.png').write_bytes(b'\x89PNG not really')
    source = ImageSource(str(tmp_path))
    assert len(source) == 4 and source.labels[0] == 'class_0'
    with source.open(source.paths.index(paths[1])) as clip:
        assert clip.num_frames == 1
        a, b = clip.read([0, 0])
        assert a.shape == (30, 40, 3) and a is b
    with pytest.raises(UnreadableError, match='broken.png: not a decodable image'):
        source.open(source.paths.index(str(tmp_path / 'class_0' / 'broken.png')))
