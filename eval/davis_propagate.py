"""DAVIS-2017 semi-supervised video object segmentation by label propagation.

Propagates each val sequence's first annotation with the features of a ViT checkpoint, writes
indexed palette PNGs in the official results layout (<output_dir>/<seq>/<frame>.png), scores them
as davis2017-evaluation does and writes global_results-val.csv / per-sequence_results-val.csv:

    python eval/davis_propagate.py --davis_path DAVIS --checkpoint ckpt.pth --output_dir out/davis
    python eval/davis_propagate.py --davis_path DAVIS --output_dir out/davis --score_only
"""
import argparse
import os
import sys

if __name__ == "__main__":  # run as a script: the repo root, not eval/, first on the path
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from eval import cli, davis_metrics, overlay
from eval.davis_data import first_annotation, load_sequence, read_sequence_names
from eval.files import InputError, read_indexed_png, read_rgb, stem, write_indexed_png


def get_args_parser():
    parser = argparse.ArgumentParser("DAVIS-2017 label propagation", add_help=False,
                                     parents=[cli.common_args(topk=7, radius=20, short_side=480)])
    parser.add_argument("--davis_path", required=True, help="DAVIS root: ImageSets/, JPEGImages/, Annotations/")
    parser.add_argument("--split", default="val", help="ImageSets/2017/<split>.txt")
    parser.add_argument("--resolution", default="480p")
    parser.add_argument("--score_only", action="store_true", help="score the PNGs already in --output_dir, no model")
    parser.add_argument("--save_overlays", action="store_true",
                        help="also write <output_dir>/overlays/<seq>/<frame>.png and <seq>.gif")
    return parser


def propagate_sequence(extractor, seq, args):
    """Write <output_dir>/<seq>/<frame>.png for every frame (the first one is its annotation)."""
    mask0, palette, n_objects = first_annotation(seq)
    folder = os.path.join(args.output_dir, seq.name)
    write_indexed_png(os.path.join(folder, stem(seq.frames[0]) + ".png"), mask0, palette)
    for path, labels in zip(seq.frames[1:], cli.propagate_masks(extractor, seq.frames, mask0, n_objects + 1, args)):
        write_indexed_png(os.path.join(folder, stem(path) + ".png"), labels, palette)


def save_overlays(seq, output_dir):
    """Blend the result PNGs of a sequence into its frames: a PNG per frame and one GIF."""
    _, palette, _ = first_annotation(seq)
    folder = os.path.join(output_dir, "overlays", seq.name)
    images = []
    for path in seq.frames:
        labels, _ = read_indexed_png(os.path.join(output_dir, seq.name, stem(path) + ".png"))
        images.append(overlay.blend(read_rgb(path), labels, palette))
        overlay.save_png(os.path.join(folder, stem(path) + ".png"), images[-1])
    overlay.save_gif(os.path.join(output_dir, "overlays", seq.name + ".gif"), images)


def load_sequences(args):
    """The sequences of --split, checked (frames, annotations) before any work."""
    return [load_sequence(args.davis_path, name, args.resolution)
            for name in read_sequence_names(args.davis_path, args.split)]


def propagate_all(extractor, sequences, args):
    """Propagate every sequence into args.output_dir, a progress line per sequence."""
    progress = cli.Progress([len(seq.frames) for seq in sequences])
    for seq in sequences:
        propagate_sequence(extractor, seq, args)
        progress.step(seq.name, len(seq.frames))


def score(sequences, args):
    """Score the result PNGs in args.output_dir and write the official CSVs -> (global_scores, per_object)."""
    global_scores, per_object = davis_metrics.evaluate(sequences, args.output_dir)
    davis_metrics.write_results(args.output_dir, global_scores, per_object, args.split)
    return global_scores, per_object


def main(args):
    sequences = load_sequences(args)
    if args.score_only:
        if not os.path.isdir(args.output_dir):
            raise InputError(f"{args.output_dir}: no such results folder to score")
    else:
        cli.prepare_output_dir(args.output_dir, [os.path.join(args.davis_path, d) for d in ("Annotations", "JPEGImages")])
        cli.print_args(args)
        propagate_all(cli.extractor_from_args(args), sequences, args)
    global_scores, per_object = score(sequences, args)
    if args.save_overlays:
        for seq in sequences:
            save_overlays(seq, args.output_dir)
    print(davis_metrics.format_table(global_scores, per_object, args.split))


if __name__ == "__main__":
    cli.run(main, argparse.ArgumentParser(parents=[get_args_parser()]))
