"""JHMDB pose keypoint propagation: PCK@0.1 and PCK@0.2 on the split-1 test videos.

The 15 joints of the first frame (``joint_positions.mat``, ``pos_img``: (2, 15, T), 1-based pixels)
become Gaussian heatmaps on the feature grid (frames resized to 320x320 by default), are propagated,
decoded back to pixels and scored against every later frame (see eval/keypoints.py):

    python eval/jhmdb_propagate.py --jhmdb_path JHMDB --checkpoint ckpt.pth --output_dir out/jhmdb

Videos come from ``<jhmdb_path>/splits/<action>_test_split1.txt`` (lines '<video>.avi 2' are test
videos; frames in ``Rename_Images/<action>/<video>/``, joints in
``joint_positions/<action>/<video>/joint_positions.mat``), or from --filelist: lines
'<frames_dir> <joint_positions.mat>' as in CRW's test lists, relative to --jhmdb_path.
"""
import argparse
import glob
import logging
import os
import sys

if __name__ == "__main__":  # run as a script: the repo root, not eval/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import scipy.io

from eval import cli, keypoints
from eval.files import InputError, atomic_path, image_size, list_files, read_list, write_csv
from eval.propagation import propagate

logger = logging.getLogger("siammae.eval.jhmdb")

ALPHAS = (0.1, 0.2)


def get_args_parser():
    parser = argparse.ArgumentParser("JHMDB keypoint propagation", add_help=False,
                                     parents=[cli.common_args(topk=7, radius=20, size=(320, 320))])
    parser.add_argument("--jhmdb_path", default="",
                        help="JHMDB root: splits/, Rename_Images/, joint_positions/ (needed unless --filelist)")
    parser.add_argument("--split", default=1, type=int, help="which of the three official splits")
    parser.add_argument("--filelist", default="",
                        help="'<frames_dir> <mat>' lines instead of the official split files (paths relative to "
                             "--jhmdb_path when given)")
    parser.add_argument("--sigma", default=0.5, type=float, help="heatmap Gaussian width, in feature-grid cells")
    return parser


def video_name(frames_dir):
    """'<action>/<video>': the last two folders of a frames directory."""
    parts = os.path.normpath(frames_dir).split(os.sep)
    return "/".join(parts[-2:])


def test_videos(args):
    """[(name, frames_dir, mat_path)] of the test videos."""
    if args.filelist:
        rows = [line.split() for line in read_list(args.filelist, "the list of '<frames_dir> <mat>' lines")]
        bad = [r for r in rows if len(r) != 2]
        if bad:
            raise InputError(f"{args.filelist}: expected '<frames_dir> <mat>' per line, "
                             f"found '{' '.join(bad[0])}'")
        return [(video_name(d), os.path.join(args.jhmdb_path, d), os.path.join(args.jhmdb_path, m)) for d, m in rows]
    if not args.jhmdb_path:
        raise InputError("give --jhmdb_path (the JHMDB root) or --filelist")
    split_files = sorted(glob.glob(os.path.join(args.jhmdb_path, "splits", f"*_test_split{args.split}.txt")))
    if not split_files:
        raise InputError(f"{os.path.join(args.jhmdb_path, 'splits')}: "
                         f"no *_test_split{args.split}.txt files")
    videos = []
    for path in split_files:
        action = os.path.basename(path)[:-len(f"_test_split{args.split}.txt")]
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        if any(len(r) != 2 for r in rows):
            raise InputError(f"{path}: expected '<video>.avi <1|2>' per line")
        for video in (os.path.splitext(name)[0] for name, label in rows if label == "2"):
            frames = os.path.join(args.jhmdb_path, "Rename_Images", action, video)
            joints = os.path.join(args.jhmdb_path, "joint_positions", action, video, "joint_positions.mat")
            videos.append((f"{action}/{video}", frames, joints))
    return videos


def read_joints(path):
    """pos_img of a joint_positions.mat as (T, J, 2) 0-based pixel (x, y)."""
    try:
        pos = scipy.io.loadmat(path)["pos_img"]
    except (OSError, ValueError, KeyError, scipy.io.matlab.MatReadError) as e:
        raise InputError(f"{path}: not a JHMDB joint_positions.mat with 'pos_img' ({e})") from None
    if pos.ndim != 3 or pos.shape[0] != 2:
        raise InputError(f"{path}: pos_img has shape {pos.shape}, expected (2, joints, frames)")
    return pos.transpose(2, 1, 0).astype(np.float64) - 1


def read_video(frames_dir, mat):
    """A test video's frame paths and (T, J, 2) joints, both at least 2 frames long (frame 0 is the truth
    propagated to the others)."""
    frames, joints = list_files(frames_dir, (".png", ".jpg"), "frames"), read_joints(mat)
    for path, n, what in ((frames_dir, len(frames), "frames"), (mat, len(joints), "annotated frames in pos_img")):
        if n < 2:
            raise InputError(f"{path}: {n} {what}; propagation needs at least 2")
    if len(frames) != len(joints):  # JHMDB has such videos; CRW's evaluation also keeps the shorter length
        logger.warning(f"{mat}: {len(joints)} annotated frames for {len(frames)} frames in {frames_dir}: "
                       f"the first {min(len(frames), len(joints))} are evaluated")
    return frames, joints


def propagate_video(extractor, frames, joints, args):
    """(T, J, 2) predicted pixel joints of frames 0.. (frame 0: the truth; vanished joints: -1)."""
    size, grid, features = cli.video_features(extractor, frames, args)
    frame_size = image_size(frames[0])
    labels0 = keypoints.heatmaps(keypoints.pixels_to_grid(joints[0], frame_size, grid), grid, args.sigma)
    preds = [joints[0]]
    for soft in propagate(features, labels0, **cli.propagation_kwargs(args)):
        xy = keypoints.decode(soft)
        preds.append(np.where(xy < 0, -1, keypoints.grid_to_pixels(xy, frame_size, grid)))
    return np.stack(preds)


def main(args):
    videos = test_videos(args)
    if not videos:
        raise InputError(f"{args.filelist or args.jhmdb_path}: no test video listed")
    checked = [(name, *read_video(frames_dir, mat)) for name, frames_dir, mat in videos]
    cli.prepare_output_dir(args.output_dir, [])
    cli.print_args(args)
    extractor = cli.extractor_from_args(args)
    all_errors, rows = [], []
    progress = cli.Progress([min(len(frames), len(joints)) for _, frames, joints in checked])
    for name, frames, joints in checked:
        n = min(len(frames), len(joints))
        pred = propagate_video(extractor, frames[:n], joints[:n], args)
        with atomic_path(os.path.join(args.output_dir, name + ".npy")) as tmp:
            np.save(tmp, pred)
        errors = keypoints.normalised_errors(pred[1:], joints[1:n])
        all_errors.append(errors)
        rows.append([name] + [keypoints.pck(errors, a) for a in ALPHAS])
        progress.step(name, n, ", ".join(f"PCK@{a} {v:.3f}" for a, v in zip(ALPHAS, rows[-1][1:])))
    errors = np.concatenate(all_errors)
    scores = [keypoints.pck(errors, a) for a in ALPHAS]
    header = [f"PCK@{a}" for a in ALPHAS]
    write_csv(os.path.join(args.output_dir, "jhmdb_pck.csv"), header, [scores], "%.4f")
    write_csv(os.path.join(args.output_dir, "jhmdb_per-video.csv"), ["Video"] + header, rows, "%.4f")
    print(f"JHMDB {args.filelist or f'split {args.split}'}, {len(checked)} videos: " +
          ", ".join(f"{h} {100 * s:.1f}" for h, s in zip(header, scores)))


if __name__ == "__main__":
    cli.run(main, argparse.ArgumentParser(parents=[get_args_parser()]))
