import os

import pytest

from datasets.sources import (VIDEO_EXTENSIONS, UnreadableError, check_file, read_path_list,
                              scan_folder)


def touch(path, data=b'x'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return str(path)


def test_scan_folder_sorted_filtered_and_skips_hidden(tmp_path):
    b = touch(tmp_path / 'b' / 'v.MP4')
    a = touch(tmp_path / 'a' / 'v.webm')
    touch(tmp_path / 'a' / 'notes.txt')
    touch(tmp_path / '.cache' / 'v.mp4')
    touch(tmp_path / 'a' / '.v.avi')
    assert scan_folder(str(tmp_path), VIDEO_EXTENSIONS) == [a, b]
    with pytest.raises(FileNotFoundError, match='no such folder'):
        scan_folder(str(tmp_path / 'missing'), VIDEO_EXTENSIONS)


def test_read_path_list_header_comments_labels(tmp_path):
    lst = tmp_path / 'list.csv'
    lst.write_text('# videos\npath,label\nclips/a.mp4,dance\n/abs/b.mp4,run\nc.avi\n\n')
    paths, labels = read_path_list(str(lst))
    assert paths == [str(tmp_path / 'clips' / 'a.mp4'), '/abs/b.mp4', str(tmp_path / 'c.avi')]
    assert labels == ['dance', 'run', None]
    txt = tmp_path / 'list.txt'
    txt.write_text('a.mp4 12\n')
    assert read_path_list(str(txt)) == ([str(tmp_path / 'a.mp4')], ['12'])
    with pytest.raises(FileNotFoundError, match='no such list file'):
        read_path_list(str(tmp_path / 'none.txt'))


def test_check_file(tmp_path):
    check_file(touch(tmp_path / 'ok.mp4'))
    with pytest.raises(UnreadableError, match='zero-byte'):
        check_file(touch(tmp_path / 'empty.mp4', b''))
    with pytest.raises(UnreadableError, match='cannot stat'):
        check_file(str(tmp_path / 'missing.mp4'))


def test_read_path_list_spaces_bom_and_encoding(tmp_path):
    # Kinetics' class folders have spaces: a line naming a video is one path, with or without a label
    (tmp_path / 'air drumming').mkdir()
    (tmp_path / 'air drumming' / 'noext').write_bytes(b'x')
    txt = tmp_path / 'train.txt'
    txt.write_text('air drumming/a.mp4\nair drumming/b.mp4 3\nair drumming/noext\n')
    paths, labels = read_path_list(str(txt))
    assert paths == [str(tmp_path / 'air drumming' / n) for n in ('a.mp4', 'b.mp4', 'noext')]
    assert labels == [None, '3', None]
    bom = tmp_path / 'bom.csv'  # a spreadsheet's "CSV UTF-8": the header must still be recognised
    bom.write_bytes('\ufeffpath,label\na.mp4,0\n'.encode('utf-8'))
    assert read_path_list(str(bom)) == ([str(tmp_path / 'a.mp4')], ['0'])
    latin = tmp_path / 'latin.txt'
    latin.write_bytes('caf\xe9.mp4\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'latin\.txt: not UTF-8 text'):
        read_path_list(str(latin))


def test_read_path_list_csv_quoting_and_commas_in_names(tmp_path):
    lst = tmp_path / 'list.csv'  # as csv.writer quotes a path with a comma; an unquoted one ending in .avi stays whole
    lst.write_text('path,label\n"abseiling up/v,2.avi",3\n"quoted only.mp4"\nraw/v,3.avi\n')
    paths, labels = read_path_list(str(lst))
    assert paths == [str(tmp_path / 'abseiling up' / 'v,2.avi'), str(tmp_path / 'quoted only.mp4'),
                     str(tmp_path / 'raw' / 'v,3.avi')]
    assert labels == ['3', None, None]
