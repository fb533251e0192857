"""Benchmark of the data pipeline: index cache build time (cold, warm), the DataLoader over NuScenesDataset
(batches collated into Batch, no augmentation) for the code of this checkout and, with --baseline REF, for the
code of git ref REF (checked out into a temporary worktree) with the same settings in the same run, and the training
step rate of the model of --train-config on batches already in memory (a Lightning Trainer, default threads).
Every loader measurement runs in its own process (this file with --measure): frames/s per worker, the workers' CPU
time per frame, bytes per frame through the workers' queue (the pickled Batch) and each worker's peak and private
memory. Prints the tables (markdown; --markdown PATH also writes them to a file).

    python -m bench.pipeline [--dataroot data/synth-demo] [--version v1.0-synth] [--split synth_train]
                             [--lidar_sweeps 3] [--radar_sweeps 3] [--image_size W H] [--lidar_points N]
                             [--workers 1 2] [--baseline REF] [--train-config configs/demo.yaml | --train-config ""]
"""
from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _code_root() -> str:
    """The checkout the loader is imported from: --code ROOT (a baseline's worktree, in --measure mode) or this one."""
    return sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv[:-1] else str(REPO)


sys.path.insert(0, _code_root())

HEADER = ("what", "measured")
LOADER_HEADER = ("code", "workers", "frames/s per worker", "worker CPU ms/frame", "MB/frame through the queue",
                 "peak MB per worker", "private MB per worker")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataroot", default="data/synth-demo", help="nuScenes-format dataroot (real or synthetic)")
    ap.add_argument("--version", default="v1.0-synth", help="e.g. v1.0-mini, v1.0-trainval, v1.0-synth")
    ap.add_argument("--split", default="synth_train", help="official (mini_val, val) or custom from splits.json")
    ap.add_argument("--lidar_sweeps", type=int, default=3)
    ap.add_argument("--radar_sweeps", type=int, default=3)
    ap.add_argument("--image_size", type=int, nargs=2, default=None, metavar=("W", "H"),
                    help="images resized to W x H (default: the dataset's)")
    ap.add_argument("--lidar_points", type=int, default=None, help="also measure this checkout with the loader's "
                    "LiDAR point cap (NuScenesDataset lidar_points; e.g. the model's fine point budget)")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--batches", type=int, default=10, help="batches timed per setting (after one warm-up)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--index_workers", type=int, default=2)
    ap.add_argument("--baseline", default=None, metavar="REF", help="also measure the loader of this git ref")
    ap.add_argument("--train-config", default="configs/demo.yaml", help="model whose training rate is measured "
                    "too ('' to skip)")
    ap.add_argument("--train-steps", type=int, default=8, help="training steps timed (after two warm-up steps)")
    ap.add_argument("--markdown", default=None, metavar="PATH", help="also write the tables to this file")
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one loader measurement, JSON out
    ap.add_argument("--code", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache_dir", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(json.dumps(measure_loader(args)))
        return
    import torch

    from bench.common import write_markdown

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        rows, ds = index_rows(args, tmp)
        codes = [("this checkout", str(REPO), None)]
        if args.lidar_points:
            codes.append((f"this checkout, lidar_points {args.lidar_points}", str(REPO), args.lidar_points))
        if args.baseline:
            codes.append((f"baseline {args.baseline}", worktree(args.baseline, Path(tmp) / "baseline"), None))
        try:
            loader = [(name, w, measure_in_process(args, root, cap, w, Path(tmp) / f"cache{k}"))
                      for k, (name, root, cap) in enumerate(codes) for w in args.workers]
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(Path(tmp) / "baseline")],
                               check=False)
    if args.train_config:
        torch.set_num_threads(threads)
        rate = training_rate(ds, args.train_config, args.batch_size, args.train_steps)
        rows.append((f"training ({args.train_config}), batch {args.batch_size}", f"{rate:.1f} frames/s",
                     f"{1000 / rate:.0f} ms/frame"))
    size = "x".join(map(str, args.image_size)) if args.image_size else "default"
    title = (f"data pipeline on {args.dataroot} ({args.version}, {args.split}): {args.lidar_sweeps} LiDAR sweeps, "
             f"{args.radar_sweeps} radar sweeps, images {size}, batch {args.batch_size}, {args.batches} batches timed")
    text = "\n\n".join([table_text(rows), loader_table(loader, args.baseline is not None)])
    print(title)
    print(text)
    write_markdown(args.markdown, text)


def index_rows(args: argparse.Namespace, tmp: str) -> tuple[list[tuple[str, str, str]], object]:
    """Rows of the index cache's cold (1 and --index_workers processes) and warm build times and of one frame, and
    the dataset (this checkout's code)."""
    import datasets.index as index
    from datasets.nuscenes import NuScenesDataset
    from nuscenes.nuscenes import NuScenes  # noqa: F401  (import time is not cache build time)

    rows = []
    kw = dict(lidar_sweeps=args.lidar_sweeps, radar_sweeps=args.radar_sweeps,
              **({"image_size": tuple(args.image_size)} if args.image_size else {}))
    index._NUSC = None  # a cold cache: the devkit tables are read again
    t = time.perf_counter()
    ds = NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=f"{tmp}/index1", **kw)
    rows.append(("index cache, cold (1 process)", f"{time.perf_counter() - t:.2f} s", f"{len(ds)} samples"))
    index._NUSC = None
    t = time.perf_counter()
    NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=f"{tmp}/index2",
                    index_workers=args.index_workers, **kw)
    rows.append((f"index cache, cold ({args.index_workers} processes)", f"{time.perf_counter() - t:.2f} s", ""))
    t = time.perf_counter()
    ds = NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=f"{tmp}/index2", **kw)
    rows.append(("index cache, warm", f"{time.perf_counter() - t:.3f} s",
                 f"{len(pickle.dumps(ds.infos)) / len(ds) / 1e3:.1f} kB pickled per frame"))
    f = ds[0]
    rows.append(("one frame", f"{len(f.lidar.points)} lidar pts", f"{len(f.radar.points)} radar pts, "
                 f"images {tuple(f.camera.images.shape)}"))
    return rows, ds


def worktree(ref: str, path: Path) -> str:
    """The code of git ref `ref` checked out (detached) at `path`."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref], check=True,
                   capture_output=True)
    return str(path)


def measure_in_process(args: argparse.Namespace, root: str, cap: int | None, workers: int, cache: Path) -> dict:
    """measure_loader in a fresh process importing the loader from checkout `root`."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", "--code", root, "--cache_dir", str(cache),
           "--dataroot", str(Path(args.dataroot).resolve()), "--version", args.version, "--split", args.split,
           "--lidar_sweeps", str(args.lidar_sweeps), "--radar_sweeps", str(args.radar_sweeps),
           "--batch_size", str(args.batch_size), "--batches", str(args.batches), "--workers", str(workers)]
    cmd += ["--image_size", *map(str, args.image_size)] if args.image_size else []
    cmd += ["--lidar_points", str(cap)] if cap else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=root).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_loader(args: argparse.Namespace) -> dict:
    """One DataLoader (args.workers[0] workers, persistent) over the split, frames cycled in order: frames/s over
    args.batches batches after a warm-up one, the workers' CPU seconds per frame (all batches), MB per frame of the
    pickled Batch (first and last batch: what crosses the workers' queue), and per worker its peak resident memory
    (VmHWM) and private memory at the end (smaps_rollup Private_Clean + Private_Dirty: what is not shared)."""
    import torch
    from torch.utils.data import DataLoader

    from datasets.nuscenes import NuScenesDataset
    from sensors.frame import collate

    torch.set_num_threads(1)
    kw = {"lidar_points": args.lidar_points} if args.lidar_points else {}
    kw.update({"image_size": tuple(args.image_size)} if args.image_size else {})
    ds = NuScenesDataset(args.dataroot, args.version, args.split, lidar_sweeps=args.lidar_sweeps,
                         radar_sweeps=args.radar_sweeps, cache_dir=args.cache_dir, **kw)
    workers = args.workers[0]
    order = [i % len(ds) for i in range(args.batch_size * (args.batches + 1))]
    it = iter(DataLoader(ds, batch_size=args.batch_size, sampler=order, num_workers=workers, collate_fn=collate,
                         persistent_workers=True))
    first = next(it)
    t, frames = time.perf_counter(), 0
    for batch in it:
        frames += len(batch)
    rate = frames / (time.perf_counter() - t)
    pids = [w.pid for w in it._workers]
    cpu = sum(_proc_cpu_seconds(p) for p in pids) / (frames + len(first))
    mem = [_proc_memory_mb(p) for p in pids]
    queue = (len(pickle.dumps(first)) + len(pickle.dumps(batch))) / (len(first) + len(batch))
    return {"rate_per_worker": rate / workers, "cpu_ms": 1000 * cpu, "queue_mb": queue / 1e6,
            "peak_mb": sum(m[0] for m in mem) / workers, "private_mb": sum(m[1] for m in mem) / workers}


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process pid (/proc/pid/stat)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_memory_mb(pid: int) -> tuple[float, float]:
    """(peak resident MB (VmHWM), private MB now (Private_Clean + Private_Dirty)) of process pid."""
    def kb(path: str, keys: tuple[str, ...]) -> float:
        lines = Path(path).read_text().splitlines()
        return sum(float(line.split()[1]) for line in lines if line.split(":")[0] in keys)

    return kb(f"/proc/{pid}/status", ("VmHWM",)) / 1e3, kb(f"/proc/{pid}/smaps_rollup",
                                                            ("Private_Clean", "Private_Dirty")) / 1e3


def loader_table(results: list[tuple[str, int, dict]], baseline: bool) -> str:
    """The markdown table of the loader measurements, with the ratio of each to the baseline (the last code) at the
    same number of workers when there is one."""
    from bench.common import markdown_table

    base = {w: r for name, w, r in results if name.startswith("baseline")} if baseline else {}
    rows = []
    for name, w, r in results:
        b = base.get(w) if not name.startswith("baseline") else None
        ratio = (lambda key: f" ({r[key] / b[key]:.2f}x)" if b else "")
        rows.append((name, str(w), f"{r['rate_per_worker']:.2f}{ratio('rate_per_worker')}",
                     f"{r['cpu_ms']:.0f}{ratio('cpu_ms')}", f"{r['queue_mb']:.1f}{ratio('queue_mb')}",
                     f"{r['peak_mb']:.0f}", f"{r['private_mb']:.0f}"))
    return "\n".join(markdown_table(LOADER_HEADER, rows))


def table_text(rows: list[tuple[str, str, str]]) -> str:
    """The markdown table of (what, measured, note) rows: the note in brackets after what was measured."""
    from bench.common import markdown_table

    return "\n".join(markdown_table(HEADER, [(a, f"{b} ({c})" if c else b) for a, b, c in rows]))


def training_rate(ds, config: str, batch_size: int, steps: int) -> float:
    """Frames/s of Lightning training steps (forward, backward, optimiser) of the config's model on a few batches
    held in memory, so that only the model is timed."""
    import pytorch_lightning as pl
    import torch
    import yaml

    from fusion.module import GateFusionModule
    from sensors.frame import collate

    hp = yaml.safe_load(Path(config).read_text())["model"]
    batches = [collate([ds[(i * batch_size + j, 0)] for j in range(batch_size)]) for i in range(2)]
    times: list[float] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *_):
            self.t = time.perf_counter()

        def on_train_batch_end(self, *_):
            times.append(time.perf_counter() - self.t)

    trainer = pl.Trainer(accelerator="cpu", max_steps=steps + 2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         callbacks=[Timer()])
    loader = torch.utils.data.DataLoader(batches * (steps + 2), batch_size=None)
    trainer.fit(GateFusionModule(**hp), train_dataloaders=loader)
    return batch_size * steps / sum(times[2:])


if __name__ == "__main__":
    main()
