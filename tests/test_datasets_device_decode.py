"""--gpu_decode: undecoded pairs decoded and cropped on the device (here the CPU) match the CPU path."""
import os
import shutil
import threading
import time

import cv2
import pytest
import torch

from datasets import EncodedPairs, device_batches, to_device
from datasets.frames import FrameSource, frame_name, read_manifest, write_manifest
from datasets.pairs import PairDataset
from datasets.synthetic import coordinate_frame
from datasets.video import VideoSource

SIZES = [(96, 128), (96, 128), (120, 90)]  # two frame sizes in one batch


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    rows = []
    for v, (h, w) in enumerate(SIZES):
        folder = root / f"class_0/video_{v}"
        os.makedirs(folder)
        for t in range(20):
            cv2.imwrite(str(folder / frame_name(t)), coordinate_frame(t, (h, w)), [cv2.IMWRITE_JPEG_QUALITY, 98])
        rows.append(dict(path=f"class_0/video_{v}", num_frames=20, fps=30.0, height=h, width=w))
    write_manifest(str(root / "manifest.csv"), rows)
    return str(root)


def dataset(root, encoded, **kw):
    return PairDataset(FrameSource(root), input_size=48, frame_gap=(2, 6), repeated_sampling=3, seed=5,
                       encoded=encoded, **kw)


def test_device_decode_matches_cpu_path(frames_root):
    cpu, enc = dataset(frames_root, False), dataset(frames_root, True)
    for epoch in (0, 1):
        items = [(epoch, i) for i in range(len(SIZES))]
        ref, _ = to_device(cpu.collate([cpu[i] for i in items]), "cpu")
        batch = enc.collate([enc[i] for i in items])
        assert isinstance(batch[0], EncodedPairs) and len(batch[0].jpegs) == 3 * 3 * 2
        out, skipped = to_device(batch, "cpu")
        assert out.shape == ref.shape == (9, 2, 3, 48, 48) and skipped.tolist() == [0, 0, 0]
        # same crops, flips and frames: only the resampling kernel differs (normalised units)
        diff = (out - ref).abs()
        assert diff.mean() < 0.05, diff.mean()
        # a wrong flip or box would differ by a lot: check the test would see it
        assert (out.flip(-1) - ref).abs().mean() > 10 * diff.mean()


def test_a_batch_crosses_from_the_worker_as_one_buffer_of_the_files_bytes(frames_root):
    enc = dataset(frames_root, True)
    items = [(0, i) for i in range(len(SIZES))]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(enc, items), batch_size=3, num_workers=1,
                                         collate_fn=enc.collate)
    pairs, skipped = next(iter(loader))
    assert pairs.data.dim() == 1 and pairs.data.dtype == torch.uint8 and len(pairs.lengths) == 18
    assert int(pairs.lengths.sum()) == len(pairs.data) and skipped.tolist() == [0, 0, 0]
    for jpeg, file in zip(pairs.jpegs, pairs.files):  # each view is that file, byte for byte
        with open(file, "rb") as f:
            assert jpeg.numpy().tobytes() == f.read()
    in_process = enc.collate([enc[i] for i in items])[0]
    assert torch.equal(pairs.data, in_process.data) and torch.equal(pairs.crops, in_process.crops)


def test_decoding_in_chunks_changes_nothing(frames_root, monkeypatch):
    import datasets.device_decode as device_decode
    enc = dataset(frames_root, True)
    batch = enc.collate([enc[i] for i in range(len(SIZES))])  # 18 frames
    whole, _ = to_device(batch, "cpu")
    calls = []
    decode = device_decode.decode_jpeg
    monkeypatch.setattr(device_decode, "decode_jpeg", lambda jpegs, **kw: calls.append(len(jpegs)) or decode(jpegs, **kw))
    monkeypatch.setattr(device_decode, "DECODE_CHUNK", 4)
    chunked, _ = to_device(batch, "cpu")
    assert calls == [4, 4, 4, 4, 2] and torch.equal(chunked, whole)


def test_truncated_jpegs_are_skipped_in_the_worker(frames_root, tmp_path):
    root = tmp_path / "frames"
    shutil.copytree(frames_root, root)
    for t in range(20):  # every frame of video 1 cut in half
        path = root / "class_0/video_1" / frame_name(t)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ds = dataset(str(root), True)
    (jpegs, crops, files), n_skipped = ds[1]
    assert n_skipped >= 1 and len(jpegs) == len(files) == 6 and crops.shape == (3, 5)
    assert ds.stats()["unreadable"] == 1
    out, _ = to_device(ds.collate([ds[1], ds[0]]), "cpu")  # only whole files reach the decoder
    assert torch.isfinite(out).all()


def _break_huffman_tables(path):
    """Zero a JPEG's Huffman tables: markers, header and size stay whole (the worker's checks pass),
    but the data cannot be decoded."""
    data = bytearray(path.read_bytes())
    i = data.find(b"\xff\xc4")
    while i >= 0:
        length = (data[i + 2] << 8) | data[i + 3]
        data[i + 4:i + 2 + length] = bytes(length - 2)
        i = data.find(b"\xff\xc4", i + 2 + length)
    path.write_bytes(bytes(data))


def test_a_corrupt_jpeg_replaces_its_pair_and_is_counted(frames_root, tmp_path, caplog):
    root = tmp_path / "frames"
    shutil.copytree(frames_root, root)
    for t in range(20):
        _break_huffman_tables(root / "class_0/video_1" / frame_name(t))
    assert cv2.imread(str(root / "class_0/video_1" / frame_name(0))) is None  # the CPU path skips it
    ds = dataset(str(root), True)
    batch = ds.collate([ds[0], ds[1], ds[2]])
    assert batch[1].tolist() == [0, 0, 0]  # got past the worker
    with caplog.at_level("WARNING", logger="siammae.datasets.device_decode"):
        out, skipped = to_device(batch, "cpu")
    assert out.shape == (9, 2, 3, 48, 48) and torch.isfinite(out).all()
    assert skipped.tolist() == [0, 3, 0]  # item 1's three pairs, each replaced by the batch's first pair
    for p in (3, 4, 5):
        assert torch.equal(out[p], out[0])
    assert not torch.equal(out[6], out[0])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 6 and all("video_1" in m and "not a decodable JPEG" in m for m in messages)
    whole = ds.collate([ds[0], ds[2]])
    ref, _ = to_device(whole, "cpu")
    assert torch.equal(out[:3], ref[:3]) and torch.equal(out[6:], ref[3:])  # the other pairs as decoded alone
    with pytest.raises(RuntimeError, match="decoding 6 JPEG frames on cpu failed"):
        to_device(ds.collate([ds[1]]), "cpu")


def test_device_decode_needs_extracted_frames(tmp_path):
    with pytest.raises(ValueError, match="needs pre-extracted frames"):
        PairDataset(VideoSource([str(tmp_path / "a.mp4")], name="videos"), encoded=True)


def test_a_failing_device_decoder_gives_one_line_naming_the_way_out(frames_root, monkeypatch):
    import datasets.device_decode as device_decode

    def broken(*args, **kwargs):
        raise RuntimeError("Error while decoding JPEG images: Failed to decode batch: 6\nException raised from ...")

    monkeypatch.setattr(device_decode, "decode_jpeg", broken)
    enc = dataset(frames_root, True)
    with pytest.raises(RuntimeError) as err:
        to_device(enc.collate([enc[0]]), "cpu")
    message = str(err.value)
    assert "\n" not in message and "Failed to decode batch: 6" in message and "without --gpu_decode" in message


class _FakeStreams:
    """Stand-ins for torch.cuda's streams that record the order of events."""

    def __init__(self, monkeypatch, device_decode):
        events = self.events = []

        class FakeStream:
            def __init__(self, name):
                self.name = name

            def synchronize(self):
                events.append(("synchronize", self.name))

            def wait_stream(self, other):
                events.append(("wait_stream", self.name, other.name))

        class StreamContext:
            def __init__(self, stream):
                self.stream = stream

            def __enter__(self):
                events.append(("enter", self.stream.name))

            def __exit__(self, *exc):
                events.append(("exit", self.stream.name))

        monkeypatch.setattr(torch.cuda, "Stream", lambda device: FakeStream("side"))
        monkeypatch.setattr(torch.cuda, "stream", StreamContext)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device: FakeStream("current"))
        monkeypatch.setattr(device_decode, "_SIDE_STREAMS", {})


class _Output:
    def __init__(self, events):
        self.events = events

    def record_stream(self, stream):
        self.events.append(("record_stream", stream.name))


def test_cuda_decode_runs_on_a_side_stream_the_host_waits_for(monkeypatch):
    """nvJPEG writes without waiting for queued work (pytorch/vision#9606): on CUDA the decode must run
    inside its own stream, the host must wait for that stream before the output is used, and the output
    must be marked as used by the current stream."""
    import datasets.device_decode as device_decode

    events = _FakeStreams(monkeypatch, device_decode).events
    monkeypatch.setattr(device_decode, "_decode_crop", lambda *args: events.append(("decode",)) or (_Output(events), []))
    out, bad = device_decode.decode_crop([], torch.zeros(0, 5, dtype=torch.int64), 8, "cuda:0")
    assert isinstance(out, _Output) and bad == []
    assert events == [("enter", "side"), ("decode",), ("exit", "side"), ("synchronize", "side"),
                      ("record_stream", "current")]
    events.clear()
    device_decode.decode_crop([], torch.zeros(0, 5, dtype=torch.int64), 8, "cuda:0")
    assert len(device_decode._SIDE_STREAMS) == 1  # one stream per device, reused


def test_upload_from_host_runs_on_the_side_stream_the_training_stream_waits_for(monkeypatch):
    """A host batch is copied to the GPU on the side stream, overlapping the step queued on the training
    stream, which waits for the copy in stream order (no host wait); device batches stay where they are."""
    import datasets.device_decode as device_decode

    events = _FakeStreams(monkeypatch, device_decode).events
    out = device_decode._on_side_stream(lambda: events.append(("upload",)) or _Output(events), "cuda:0",
                                        wait_host=False)
    assert isinstance(out, _Output)
    assert events == [("enter", "side"), ("upload",), ("exit", "side"), ("wait_stream", "current", "side"),
                      ("record_stream", "current")]
    calls = []
    monkeypatch.setattr(device_decode, "_on_side_stream", lambda fn, device, wait_host: calls.append(wait_host))
    frames = torch.zeros(2, 1, 2, 3, 4, 4, dtype=torch.uint8)
    to_device((frames, torch.zeros(2)), "cuda:0")
    assert calls == [False]
    out, _ = to_device((frames, torch.zeros(2)), "cpu")  # no GPU: no side stream, normalised in place
    assert calls == [False] and out.shape == (2, 2, 3, 4, 4) and out.dtype == torch.float32


def test_cuda_decode_empties_the_stream_before_each_decode_call(monkeypatch):
    """Within one batch too, no decode call may start with work queued on the decode stream: its
    outputs could take a block a queued kernel still reads (pytorch/vision#9606)."""
    import datasets.device_decode as device_decode

    events = []

    class FakeStream:
        def synchronize(self):
            events.append("synchronize")

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: FakeStream())
    monkeypatch.setattr(device_decode, "decode_jpeg",
                        lambda jpegs, **kw: events.append(f"decode {len(jpegs)}") or [torch.zeros(3, 2, 2)] * len(jpegs))
    monkeypatch.setattr(device_decode, "DECODE_CHUNK", 4)
    images, bad = device_decode._decode_jpegs([torch.zeros(1)] * 10, torch.device("cuda", 0))
    assert len(images) == 10 and bad == []
    assert events == ["synchronize", "decode 4", "synchronize", "decode 4", "synchronize", "decode 2"]
    events.clear()
    device_decode._decode_jpegs([torch.zeros(1)] * 10, torch.device("cpu"))
    assert events == ["decode 4", "decode 4", "decode 2"]  # the CPU decoder has no stream to wait for


def test_the_check_before_training_takes_the_encoded_path(frames_root, tmp_path):
    """--gpu_decode: a data set whose every frame fails the worker's checks (here: a manifest that
    swapped height and width) is a one-line error before training, as on the CPU path."""
    root = tmp_path / "frames"
    shutil.copytree(frames_root, root)
    rows = [dict(r, height=r["width"], width=r["height"]) for r in read_manifest(str(root / "manifest.csv"))]
    write_manifest(str(root / "manifest.csv"), rows)
    dataset(str(root), False).check()  # decoding alone does not look at the manifest's size
    with pytest.raises(ValueError, match=r"none of the 3 files is readable \(first: .*but the manifest says"):
        dataset(str(root), True).check()


def _encoded_batches(root, n):
    enc = dataset(root, True)
    return [enc.collate([enc[(e, i)] for i in range(len(SIZES))]) for e in range(n)]


def test_device_batches_in_a_thread_yield_what_to_device_gives_in_order(frames_root):
    batches = _encoded_batches(frames_root, 3)
    made_in = []

    def loader():
        for b in batches:
            made_in.append(threading.current_thread().name)
            yield b

    out = list(device_batches(loader(), "cpu", threaded=True))
    ref = [to_device(b, "cpu") for b in batches]
    assert len(out) == 3 and made_in == ["device_batches"] * 3
    for (frames, skipped), (ref_frames, ref_skipped) in zip(out, ref):
        assert torch.equal(frames, ref_frames) and torch.equal(skipped, ref_skipped)
    # by default, not on the CPU: the training thread prepares each batch itself
    made_in.clear()
    assert len(list(device_batches(loader(), "cpu"))) == 3 and made_in == [threading.current_thread().name] * 3


def test_an_error_in_the_thread_is_raised_in_the_training_thread(frames_root):
    batches = _encoded_batches(frames_root, 2)

    def loader():
        yield from batches
        raise OSError("frames/video_9/000001.jpg: unreadable")

    prepared = device_batches(loader(), "cpu", threaded=True)
    assert len([next(prepared), next(prepared)]) == 2
    with pytest.raises(OSError, match="video_9/000001.jpg: unreadable"):
        next(prepared)


def test_closing_device_batches_stops_its_thread_before_returning(frames_root):
    batch = _encoded_batches(frames_root, 1)[0]
    taken = []

    def endless():
        while True:
            taken.append(1)
            yield batch

    prepared = device_batches(endless(), "cpu", threaded=True)
    next(prepared)
    next(prepared)
    prepared.close()
    assert not any(t.name == "device_batches" for t in threading.enumerate())
    # the thread runs at most one batch ahead of the one queued: nothing is drawn after close
    assert len(taken) <= 4
    n = len(taken)
    time.sleep(0.3)
    assert len(taken) == n


def test_a_persistent_worker_loader_stopped_early_serves_the_next_epoch_whole(frames_root):
    """An epoch stopped early closes its thread before the next epoch's iterator (the same persistent
    workers) is made: the next epoch gets every batch, in order."""
    enc = dataset(frames_root, True)
    items = [(0, i % len(SIZES)) for i in range(12)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(enc, items), batch_size=3, num_workers=1,
                                         persistent_workers=True, collate_fn=enc.collate)
    first = device_batches(loader, "cpu", threaded=True)
    next(first)
    first.close()
    out = list(device_batches(loader, "cpu", threaded=True))
    ref = [to_device(enc.collate([enc[key] for key in items[i:i + 3]]), "cpu") for i in range(0, 12, 3)]
    assert len(out) == len(ref) == 4
    for (frames, _), (ref_frames, _) in zip(out, ref):
        assert torch.equal(frames, ref_frames)
