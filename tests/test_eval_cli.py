"""The DAVIS, JHMDB and VIP commands end to end on generated data with a tiny random ViT,
and their one-line errors on bad input."""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from eval import cli, davis_propagate, jhmdb_propagate, vip_propagate
from eval.files import InputError, read_indexed_png, write_indexed_png
from eval.synthetic import write_davis_set

models_vit = pytest.importorskip("models_vit")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQS = ["synthetic-00", "synthetic-01"]


def parse(module, *argv):
    return argparse.ArgumentParser(parents=[module.get_args_parser()]).parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "vit_tiny.pth"
    torch.manual_seed(0)
    torch.save({"model": models_vit.vit_tiny_patch16().state_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("davis"))
    write_davis_set(root, n_sequences=2, n_frames=6, height=48, width=64, n_objects=2, seed=3)
    return root


@pytest.fixture(scope="module")
def davis_run(davis, checkpoint, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("davis_out"))
    davis_propagate.main(parse(davis_propagate, "--davis_path", davis, "--checkpoint", checkpoint, "--output_dir",
                               out, "--short_side", 48, "--device", "cpu", "--save_overlays"))
    return out


def test_davis_writes_every_frame_both_csvs_and_overlays(davis_run):
    for seq in SEQS:
        for t in range(6):
            labels, palette = read_indexed_png(os.path.join(davis_run, seq, f"{t:05d}.png"))
            assert labels.shape == (48, 64) and labels.max() <= 2 and palette is not None
            assert os.path.isfile(os.path.join(davis_run, "overlays", seq, f"{t:05d}.png"))
        with Image.open(os.path.join(davis_run, "overlays", seq + ".gif")) as gif:
            assert gif.n_frames == 6
    with open(os.path.join(davis_run, "global_results-val.csv")) as f:
        header, values = f.read().splitlines()
    assert header == "J&F-Mean,J-Mean,J-Recall,J-Decay,F-Mean,F-Recall,F-Decay"
    assert all(-1 <= float(v) <= 1 for v in values.split(","))
    with open(os.path.join(davis_run, "per-sequence_results-val.csv")) as f:
        rows = f.read().splitlines()
    assert [r.split(",")[0] for r in rows] == ["Sequence"] + [f"{s}_{k}" for s in SEQS for k in (1, 2)]


def test_score_only_from_the_command_line(davis, davis_run, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(davis_run, out)
    os.remove(os.path.join(out, "global_results-val.csv"))
    run = subprocess.run([sys.executable, "eval/davis_propagate.py", "--davis_path", davis, "--output_dir", out,
                          "--score_only"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Global results for val" in run.stdout
    with open(os.path.join(davis_run, "global_results-val.csv")) as a, open(os.path.join(out, "global_results-val.csv")) as b:
        assert a.read() == b.read()


def test_synthetic_command(tmp_path):
    run = subprocess.run([sys.executable, "eval/synthetic.py", "--out", str(tmp_path), "--sequences", "1", "--frames",
                          "3", "--height", "32", "--width", "40"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(os.listdir(tmp_path / "JPEGImages" / "480p" / "synthetic-00")) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert (tmp_path / "ImageSets" / "2017" / "val.txt").read_text() == "synthetic-00\n"
    (tmp_path / "afile").write_text("")
    for argv, message in (([str(tmp_path / "afile")], "--out " + str(tmp_path / "afile") + ": exists and is not a folder"),
                          ([str(tmp_path), "--height", "8"], "argument --height: must be at least 16, got 8")):
        run = subprocess.run([sys.executable, "eval/synthetic.py", "--out", *argv], cwd=REPO, capture_output=True, text=True)
        assert run.returncode != 0 and run.stderr.strip().splitlines()[-1].endswith(message), run.stderr


def broken_copy(davis, tmp_path):
    root = str(tmp_path / "davis")
    shutil.copytree(davis, root)
    return root


def test_a_second_synthetic_set_in_the_same_folder_replaces_the_first(tmp_path):
    write_davis_set(str(tmp_path), n_sequences=1, n_frames=5, height=64, width=80)
    write_davis_set(str(tmp_path), n_sequences=1, n_frames=2, height=32, width=48)
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        folder = tmp_path / kind / "480p" / SEQS[0]
        assert sorted(os.listdir(folder)) == [f"0000{t}.{ext}" for t in range(2)]
        assert all(Image.open(folder / f).size == (48, 32) for f in os.listdir(folder))


def test_bad_davis_inputs_name_the_file(davis, checkpoint, tmp_path):
    def run(root, *extra):
        davis_propagate.main(parse(davis_propagate, "--davis_path", root, "--checkpoint", checkpoint,
                                   "--output_dir", tmp_path / "out", "--short_side", 48, *extra))
    with pytest.raises(InputError, match="nowhere: no such DAVIS folder"):
        run(str(tmp_path / "nowhere"))
    root = broken_copy(davis, tmp_path)
    os.remove(os.path.join(root, "ImageSets", "2017", "val.txt"))
    with pytest.raises(InputError, match=r"val\.txt: missing"):
        run(root)
    shutil.rmtree(root)
    root = broken_copy(davis, tmp_path)
    shutil.rmtree(os.path.join(root, "Annotations", "480p", SEQS[1]))
    with pytest.raises(InputError, match=f"Annotations/480p/{SEQS[1]}: no such folder"):
        run(root)
    os.makedirs(os.path.join(root, "Annotations", "480p", SEQS[1]))
    with pytest.raises(InputError, match=f"Annotations/480p/{SEQS[1]}: no \\*.png annotations"):
        run(root)
    shutil.rmtree(root)
    root = broken_copy(davis, tmp_path)
    bad = os.path.join(root, "Annotations", "480p", SEQS[0], "00003.png")
    labels, palette = read_indexed_png(bad)
    write_indexed_png(bad, labels[:, :60], palette)
    with pytest.raises(InputError, match=r"00003\.png: size \(48, 60\) differs"):
        run(root)
    assert not os.path.exists(tmp_path / "out")  # input checked before anything is written
    with pytest.raises(InputError, match="results folder"):
        run(davis, "--score_only")
    shutil.rmtree(root)
    root = broken_copy(davis, tmp_path)
    first = os.path.join(root, "Annotations", "480p", SEQS[0], "00000.png")
    labels, palette = read_indexed_png(first)
    write_indexed_png(first, np.zeros_like(labels), palette)
    with pytest.raises(InputError, match=r"00000\.png: the first annotation holds no object$"):
        run(root)
    write_indexed_png(first, np.where(labels > 0, 255, 0).astype(labels.dtype), palette)  # a black-and-white mask
    with pytest.raises(InputError, match=r"holds no object \(only 0 and 255, which DAVIS reads as void"):
        run(root)


def test_results_folder_in_the_data_set_or_blocked_by_a_file_is_refused_before_any_work(davis, checkpoint, tmp_path,
                                                                                        monkeypatch):
    root = broken_copy(davis, tmp_path)  # a copy: a failing check must not damage the module's set
    annotations = os.path.join(root, "Annotations", "480p")
    before = {p: open(os.path.join(annotations, SEQS[0], p), "rb").read()
              for p in os.listdir(os.path.join(annotations, SEQS[0]))}
    monkeypatch.setattr(cli, "extractor_from_args", lambda args: pytest.fail("the model was loaded"))
    for out in (annotations, os.path.join(root, "JPEGImages", "480p", "x")):
        with pytest.raises(InputError, match=r"--output_dir .* lies in the data set's .*: results written there would"):
            davis_propagate.main(parse(davis_propagate, "--davis_path", root, "--checkpoint", checkpoint,
                                       "--output_dir", out, "--short_side", 48))
    assert before == {p: open(os.path.join(annotations, SEQS[0], p), "rb").read() for p in before}
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match=r"^--output_dir .*afile: exists and is not a folder$"):
        davis_propagate.main(parse(davis_propagate, "--davis_path", root, "--checkpoint", checkpoint,
                                   "--output_dir", tmp_path / "afile", "--short_side", 48))
    vip = tmp_path / "vip"
    shutil.copytree(os.path.join(root, "JPEGImages", "480p", SEQS[0]), vip / "Images" / SEQS[0])
    shutil.copytree(os.path.join(annotations, SEQS[0]), vip / "Annotations" / "Category_ids" / SEQS[0])
    os.makedirs(vip / "lists")
    (vip / "lists" / "val_videos.txt").write_text(SEQS[0] + "\n")
    with pytest.raises(InputError, match="lies in the data set's"):
        vip_propagate.main(parse(vip_propagate, "--vip_path", vip, "--checkpoint", checkpoint, "--output_dir",
                                 vip / "Annotations" / "Category_ids", "--size", 48, 64))


def test_failed_run_keeps_earlier_outputs(davis, davis_run, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(davis_run, out)
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("global_results-val.csv", f"{SEQS[0]}/00001.png")}
    bad = os.path.join(out, SEQS[1], "00002.png")
    labels, palette = read_indexed_png(bad)
    labels[0, 0] = 7
    write_indexed_png(bad, labels, palette)
    run = subprocess.run([sys.executable, "eval/davis_propagate.py", "--davis_path", davis, "--output_dir", out,
                          "--score_only"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0
    assert f"{SEQS[1]}/00002.png: index 7 is higher than the 2 objects" in run.stderr
    assert before == {f: open(os.path.join(out, f), "rb").read() for f in before}
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_davis_annotation_without_its_frame_and_jhmdb_count_mismatch_are_reported(davis, tmp_path, caplog):
    root = broken_copy(davis, tmp_path)
    os.remove(os.path.join(root, "JPEGImages", "480p", SEQS[0], "00004.jpg"))
    with pytest.raises(InputError, match=r"00004\.png: annotation without frame \(00004\.jpg\)"):
        davis_propagate.load_sequences(parse(davis_propagate, "--davis_path", root))
    jhmdb = tmp_path / "jhmdb"
    make_jhmdb(str(jhmdb), davis)
    os.remove(jhmdb / "Rename_Images" / "walk" / "clipA" / "00005.png")
    mat = jhmdb / "joint_positions" / "walk" / "clipA" / "joint_positions.mat"
    with caplog.at_level("WARNING", logger="siammae"):
        frames, joints = jhmdb_propagate.read_video(str(jhmdb / "Rename_Images" / "walk" / "clipA"), str(mat))
    assert (len(frames), len(joints)) == (4, 5)
    assert f"{mat}: 5 annotated frames for 4 frames in" in caplog.text and "the first 4 are evaluated" in caplog.text


def make_jhmdb(root, davis):
    """One test video (the frames of a synthetic sequence) with 15 joints that stay put."""
    os.makedirs(os.path.join(root, "splits"))
    with open(os.path.join(root, "splits", "walk_test_split1.txt"), "w") as f:
        f.write("clipA.avi 2\nclipB.avi 1\n")
    frames = os.path.join(root, "Rename_Images", "walk", "clipA")
    os.makedirs(frames)
    for t in range(5):
        Image.open(os.path.join(davis, "JPEGImages", "480p", SEQS[0], "00000.jpg")).save(
            os.path.join(frames, f"{t + 1:05d}.png"))
    joints = np.random.default_rng(0).uniform([8, 8], [56, 40], (15, 2))
    pos = np.repeat(joints.T[:, :, None], 5, axis=2) + 1  # (2, 15, T), 1-based
    mat = os.path.join(root, "joint_positions", "walk", "clipA")
    os.makedirs(mat)
    scipy.io.savemat(os.path.join(mat, "joint_positions.mat"), {"pos_img": pos})


def test_jhmdb_command(davis, checkpoint, tmp_path):
    make_jhmdb(str(tmp_path / "jhmdb"), davis)
    out = tmp_path / "out"
    jhmdb_propagate.main(parse(jhmdb_propagate, "--jhmdb_path", tmp_path / "jhmdb", "--checkpoint", checkpoint,
                               "--output_dir", out, "--size", 48, 64))
    pred = np.load(out / "walk" / "clipA.npy")
    assert pred.shape == (5, 15, 2)
    header, values = (out / "jhmdb_pck.csv").read_text().splitlines()
    assert header == "PCK@0.1,PCK@0.2"
    pck01, pck02 = map(float, values.split(","))
    assert 0 <= pck01 <= pck02 <= 1
    assert (out / "jhmdb_per-video.csv").read_text().splitlines()[1].startswith("walk/clipA,")
    listed = tmp_path / "list.txt"  # CRW-style list, absolute paths, no --jhmdb_path: the same result
    listed.write_text(f"{tmp_path}/jhmdb/Rename_Images/walk/clipA {tmp_path}/jhmdb/joint_positions/walk/clipA/"
                      "joint_positions.mat\n")
    jhmdb_propagate.main(parse(jhmdb_propagate, "--filelist", listed, "--checkpoint", checkpoint,
                               "--output_dir", tmp_path / "out2", "--size", 48, 64))
    assert (tmp_path / "out2" / "jhmdb_pck.csv").read_text() == (out / "jhmdb_pck.csv").read_text()
    with pytest.raises(InputError, match="--jhmdb_path .* or --filelist"):
        jhmdb_propagate.main(parse(jhmdb_propagate, "--checkpoint", checkpoint, "--output_dir", tmp_path / "o3"))
    mat = tmp_path / "jhmdb" / "joint_positions" / "walk" / "clipA" / "joint_positions.mat"
    scipy.io.savemat(mat, {"pos_img": np.zeros((2, 15, 1))})  # one annotated frame: nothing to propagate to
    with pytest.raises(InputError, match=f"{mat}: 1 annotated frames in pos_img; propagation needs at least 2"):
        jhmdb_propagate.main(parse(jhmdb_propagate, "--filelist", listed, "--checkpoint", checkpoint,
                                   "--output_dir", tmp_path / "o4"))
    mat.write_bytes(b"")  # an empty (cut) download
    with pytest.raises(InputError, match=f"{mat}: not a JHMDB joint_positions.mat with 'pos_img'"):
        jhmdb_propagate.main(parse(jhmdb_propagate, "--filelist", listed, "--checkpoint", checkpoint,
                                   "--output_dir", tmp_path / "o4"))


def test_vip_command(davis, checkpoint, tmp_path):
    root = tmp_path / "vip"
    for seq in SEQS:
        shutil.copytree(os.path.join(davis, "JPEGImages", "480p", seq), root / "Images" / seq)
        shutil.copytree(os.path.join(davis, "Annotations", "480p", seq), root / "Annotations" / "Category_ids" / seq)
    os.makedirs(root / "lists")
    (root / "lists" / "val_videos.txt").write_text("\n".join(SEQS) + "\n")
    out = tmp_path / "out"
    vip_propagate.main(parse(vip_propagate, "--vip_path", root, "--checkpoint", checkpoint, "--output_dir", out,
                             "--size", 48, 64))
    assert len(os.listdir(out / SEQS[0])) == 5
    header, values = (out / "vip_miou.csv").read_text().splitlines()
    assert header.split(",")[:3] == ["mIoU", "background", "hat"]
    assert 0 <= float(values.split(",")[0]) <= 1
    bad = root / "Annotations" / "Category_ids" / SEQS[1] / "00000.png"
    labels, palette = read_indexed_png(str(bad))
    write_indexed_png(str(bad), np.where(labels == 1, 42, labels), palette)
    with pytest.raises(InputError, match=r"00000\.png: label 42 is not one of the 20 classes"):
        vip_propagate.main(parse(vip_propagate, "--vip_path", root, "--checkpoint", checkpoint, "--output_dir", out,
                                 "--size", 48, 64))


def test_progress_lines_give_rate_and_eta(monkeypatch, capsys):
    clock = iter([100.0, 105.0, 120.0])  # start; 10 frames after 5 s; 30 more after 15 s
    monkeypatch.setattr(cli.time, "time", lambda: next(clock))
    progress = cli.Progress([10, 30])
    first = progress.step("a", 10)
    second = progress.step("b", 30, "running mIoU 0.500")
    # 10 frames in 5 s: 2 frames/s, 30 frames left -> 15 s
    assert first == "[1/2] a: 10 frames in 5.0s (2.0 frames/s), ETA 0:00:15"
    assert second == "[2/2] b: 30 frames in 15.0s (2.0 frames/s), running mIoU 0.500, ETA 0:00:00"
    assert capsys.readouterr().out.splitlines() == [first, second]


def test_propagation_defaults_are_table_4b():
    for module, (k, r) in ((davis_propagate, (7, 20)), (jhmdb_propagate, (7, 20)), (vip_propagate, (10, 8))):
        parser = argparse.ArgumentParser(parents=[module.get_args_parser()])
        args = argparse.Namespace(**{a.dest: parser.get_default(a.dest) for a in parser._actions})
        assert cli.propagation_kwargs(args) == dict(topk=k, temperature=0.1, queue=20, radius=r,
                                                    restrict_first=False, window="circle")
