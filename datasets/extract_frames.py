# Copyright the SiamMAE authors. Licensed under the Apache License, Version 2.0.
"""Extract video frames to JPEG folders once, so that training needs no video decoder.

    python datasets/extract_frames.py --src VIDEOS --dst FRAMES --short_side 256 --fps 30 --workers 8

VIDEOS is a Kinetics-layout folder (root/<class>/<video>.mp4) or a .txt/.csv list of videos.
Writes FRAMES/<class>/<video>/000001.jpg ..., FRAMES/manifest.csv (path, num_frames, fps,
height, width) and FRAMES/extract_report.csv (each skipped or truncated video and why).
Resumable: finished videos are kept; a video is written into a hidden .partial folder and
renamed when complete, so a killed run leaves no half-written folder behind as finished. Each
finished folder holds its manifest row and report line (.extract.json), and FRAMES/extract_options.json
the options it was made with: resuming with another --fps, --short_side or --quality is an error.
Frames are resampled to --fps when the video is faster (slower videos keep every frame and
their own fps); the loader scales the frame gap by the fps in the manifest.
"""
import argparse
import collections
import csv
import json
import multiprocessing
import os
import shutil
import sys
import time

if __package__ in (None, ''):  # run as a script: import the package from the repo root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import cv2  # noqa: E402

from datasets.frames import JPEG_QUALITY, MANIFEST_NAME, frame_name, write_manifest  # noqa: E402
from datasets.sources import (VIDEO_EXTENSIONS, UnreadableError, read_path_list,  # noqa: E402
                              scan_folder)
from datasets.video import VideoClip  # noqa: E402
from util.args import bounded  # noqa: E402
from util.misc import make_output_dir  # noqa: E402

REPORT_NAME = 'extract_report.csv'
OPTIONS_NAME = 'extract_options.json'  # the options the frames were made with
RECORD_NAME = '.extract.json'  # in each finished folder: its manifest row, status and reason


def get_args_parser():
    parser = argparse.ArgumentParser('Extract frames for SiamMAE pre-training', add_help=True)
    parser.add_argument('--src', required=True, help='video folder (Kinetics layout) or .txt/.csv list')
    parser.add_argument('--dst', required=True, help='output folder of frame folders + manifest')
    parser.add_argument('--short_side', default=256, type=bounded(0), help='resize so the short side is '
                        'at most this (0: keep size)')
    parser.add_argument('--fps', default=30.0, type=bounded(0, kind=float), help='at most this frame rate (0: keep all)')
    parser.add_argument('--min_seconds', default=3.0, type=bounded(0, kind=float), help='skip shorter videos')
    parser.add_argument('--quality', default=JPEG_QUALITY, type=bounded(1, 100), help='JPEG quality')
    parser.add_argument('--workers', default=max(1, (os.cpu_count() or 2) - 1), type=bounded(0))
    return parser


def list_jobs(src):
    """[(video path, output folder relative to dst)]: the path relative to the source folder (a
    list's own folder, or the folder common to its videos when some lie outside it), extension
    dropped unless two videos share a name (class/video.mp4 and class/video.avi keep it). A video
    listed twice is extracted once."""
    if os.path.isfile(src):
        paths, _ = read_path_list(src)
        paths = [os.path.abspath(p) for p in dict.fromkeys(paths)]
        base = os.path.dirname(os.path.abspath(src))
        if paths and any(os.path.relpath(p, base).startswith('..') for p in paths):
            base = os.path.commonpath([os.path.dirname(p) for p in paths])
    else:
        paths, base = scan_folder(src, VIDEO_EXTENSIONS), os.path.abspath(src)
    if not paths:
        raise FileNotFoundError(f'{src}: no video files found')
    rels = [os.path.relpath(p, base) for p in paths]
    stems = [os.path.splitext(r)[0] for r in rels]
    clash = {s for s, n in collections.Counter(stems).items() if n > 1}
    return [(p, r if s in clash else s) for p, r, s in zip(paths, rels, stems)]


def check_options(dst, args):
    """Record the options that shape the frames in dst, or, resuming, refuse other ones: a manifest
    mixing frame rates or sizes would mislead the loader's gap scaling."""
    path = os.path.join(dst, OPTIONS_NAME)
    options = dict(fps=args.fps, short_side=args.short_side, quality=args.quality)
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            saved = json.load(f)
        changed = [f'--{k} {saved.get(k)} (now {v})' for k, v in options.items() if saved.get(k) != v]
        if changed:
            raise ValueError(f'{dst}: its frames were extracted with {", ".join(changed)}; '
                             'resume with the same options or use another --dst')
        return
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(options, f)


def output_fps(src_fps, max_fps):
    return min(src_fps, max_fps) if max_fps > 0 else src_fps


def resize_short_side(frame, short_side):
    h, w = frame.shape[:2]
    if short_side <= 0 or min(h, w) <= short_side:
        return frame
    scale = short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def finished(src, folder, rel, args):
    """(status, manifest row, reason) of a folder finished by an earlier run, from its record; the
    row alone, rebuilt, for a folder without one (written before records existed), or None."""
    record = os.path.join(folder, RECORD_NAME)
    if os.path.isfile(record):
        with open(record, encoding='utf-8') as f:
            r = json.load(f)
        return r['status'], {**r['row'], 'path': rel}, r['reason']
    row = legacy_row(src, folder, rel, args)
    return None if row is None else ('extracted', row, '')


def legacy_row(src, folder, rel, args):
    """Manifest row of a finished folder that has no record: counted and measured."""
    n = sum(1 for f in os.listdir(folder) if f.endswith('.jpg'))
    first = cv2.imread(os.path.join(folder, frame_name(0)))
    if n == 0 or first is None:
        return None
    with VideoClip(src) as clip:
        fps = output_fps(clip.fps, args.fps)
    return dict(path=rel, num_frames=n, fps=round(fps, 4), height=first.shape[0],
                width=first.shape[1])


def extract_one(job, args):
    """Extract one video. Returns (status, row or None, reason, earlier): status 'extracted',
    'truncated' (kept what decodes) or 'skipped'; earlier, whether an earlier run finished it."""
    src, rel = job
    final = os.path.join(args.dst, rel)
    try:
        if os.path.isdir(final):
            done = finished(src, final, rel, args)
            if done is not None:
                return (*done, True)
            shutil.rmtree(final)
        with VideoClip(src) as clip:
            seconds = clip.num_frames / clip.fps
            if seconds < args.min_seconds:
                return 'skipped', None, f'too short: {seconds:.2f} s < {args.min_seconds:g} s', False
            return (*write_frames(clip, final, rel, args), False)
    except UnreadableError as e:
        return 'skipped', None, str(e).split(': ', 1)[-1], False
    except OSError as e:
        return 'skipped', None, f'cannot write frames: {e}', False
    except Exception as e:  # e.g. cv2.error inside a damaged stream: one video must not end the run
        lines = str(e).strip().splitlines() or ['']
        return 'skipped', None, f'{type(e).__name__}: {lines[-1]}', False


def write_frames(clip, final, rel, args):
    """Decode the clip once, writing frames at the output rate into a .partial folder."""
    tmp = os.path.join(os.path.dirname(final), f'.{os.path.basename(final)}.partial')
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    fps = output_fps(clip.fps, args.fps)
    step = clip.fps / fps
    decoded = written = 0
    shape = None
    params = [cv2.IMWRITE_JPEG_QUALITY, args.quality]
    while True:
        ok, frame = clip.cap.read()
        if not ok or frame is None:
            break
        while round(written * step) == decoded:
            frame_out = resize_short_side(frame, args.short_side)
            shape = frame_out.shape
            if not cv2.imwrite(os.path.join(tmp, frame_name(written)), frame_out, params):
                raise OSError(f'{tmp}: JPEG write failed')
            written += 1
        decoded += 1
    if decoded == 0 or decoded / clip.fps < args.min_seconds:
        shutil.rmtree(tmp)
        reason = (f'too short: {decoded} decodable frames = {decoded / clip.fps:.2f} s '
                  f'< {args.min_seconds:g} s' if decoded else 'no decodable frames')
        return 'skipped', None, reason
    row = dict(path=rel, num_frames=written, fps=round(fps, 4), height=shape[0], width=shape[1])
    status, reason = 'extracted', ''
    if decoded < clip.num_frames - 1:
        status, reason = 'truncated', f'decoded {decoded} of {clip.num_frames} frames; kept them'
    with open(os.path.join(tmp, RECORD_NAME), 'w', encoding='utf-8') as f:
        json.dump(dict(status=status, row=row, reason=reason), f)
    os.rename(tmp, final)
    return status, row, reason


class Progress:
    """One-line progress bar with rate and ETA on stderr."""

    def __init__(self, total, width=30):
        self.total, self.width = total, width
        self.start = self.last = time.time()

    def update(self, done, skipped, final=False):
        now = time.time()
        if not final and now - self.last < 0.2:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0
        filled = int(self.width * done / self.total)
        sys.stderr.write(f'\r[{"#" * filled}{"." * (self.width - filled)}] {done}/{self.total} '
                         f'{rate:.1f} videos/s ETA {int(eta) // 60}:{int(eta) % 60:02d} '
                         f'skipped {skipped}' + ('\n' if final else ''))
        sys.stderr.flush()


def _init_worker():
    cv2.setNumThreads(1)


def _run_job(packed):
    job, args = packed
    return job, extract_one(job, args)


def main(args):
    jobs = list_jobs(args.src)
    make_output_dir(args.dst, '--dst')
    check_options(args.dst, args)
    rows, report, counts = [], [], dict(done=0, extracted=0, truncated=0, skipped=0)
    progress = Progress(len(jobs))
    packed = [(job, args) for job in jobs]
    if args.workers > 1:
        method = 'fork' if 'fork' in multiprocessing.get_all_start_methods() else 'spawn'
        pool = multiprocessing.get_context(method).Pool(args.workers, initializer=_init_worker)
        results = pool.imap_unordered(_run_job, packed, chunksize=1)
    else:
        pool, results = None, map(_run_job, packed)
    try:
        for n, ((src, _), (status, row, reason, earlier)) in enumerate(results, start=1):
            counts['done' if earlier else status] += 1
            if row is not None:
                rows.append(row)
            if reason:
                report.append(dict(path=src, status=status, reason=reason))
            progress.update(n, counts['skipped'], final=n == len(jobs))
    except BaseException:  # Ctrl-C or an error: stop the workers now (half-done videos stay .partial)
        if pool is not None:
            pool.terminate()
        raise
    if pool is not None:
        pool.close()
        pool.join()
    write_manifest(os.path.join(args.dst, MANIFEST_NAME), rows)
    write_report(os.path.join(args.dst, REPORT_NAME), report)
    print(f'{len(rows)} videos in {os.path.join(args.dst, MANIFEST_NAME)} '
          f'(extracted {counts["extracted"]}, truncated {counts["truncated"]}, '
          f'already done {counts["done"]}); skipped {counts["skipped"]}, see '
          f'{os.path.join(args.dst, REPORT_NAME)}')
    if not rows:
        raise ValueError(f'{args.src}: no video was extracted ({counts["skipped"]} skipped; why: '
                         f'{os.path.join(args.dst, REPORT_NAME)})')
    return counts


def write_report(path, report):
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, fieldnames=('path', 'status', 'reason'))
        writer.writeheader()
        writer.writerows(sorted(report, key=lambda r: r['path']))


if __name__ == '__main__':
    try:
        main(get_args_parser().parse_args())
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'extract_frames.py: {e}')
