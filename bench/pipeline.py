"""Benchmark of the data pipeline: index cache build time (cold, warm) and frames/s of a DataLoader over
NuScenesDataset with 0/1/2 workers (batch 4, collate into Batch), measured in the same run as the training step
rate of the model of --train-config on batches already in memory (a Lightning Trainer, default threads), so the
two rates can be compared as a ratio. Prints a table (markdown; --markdown PATH also writes it to a file).

    python -m bench.pipeline [--dataroot data/synth-demo] [--version v1.0-synth] [--split synth_train]
                             [--train-config configs/demo.yaml | --train-config ""]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import datasets.index as index  # noqa: E402
from bench.common import add_data_flags, markdown_table, write_markdown  # noqa: E402
from datasets.augment import GlobalAugment, SeededSampler  # noqa: E402
from datasets.nuscenes import NuScenesDataset  # noqa: E402
from sensors.frame import collate  # noqa: E402


HEADER = ("what", "measured")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_flags(ap, split="synth_train")
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--batches", type=int, default=10, help="batches timed per setting (after one warm-up)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--index_workers", type=int, default=2)
    ap.add_argument("--train-config", default="configs/demo.yaml", help="model whose training rate is measured "
                    "too ('' to skip)")
    ap.add_argument("--train-steps", type=int, default=8, help="training steps timed (after two warm-up steps)")
    ap.add_argument("--markdown", default=None, metavar="PATH", help="also write the table to this file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    from nuscenes.nuscenes import NuScenes  # noqa: F401  (import time is not cache build time)

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        index._NUSC = None  # a cold cache: the devkit tables are read again
        t = time.perf_counter()
        ds = NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=cache, augment=GlobalAugment())
        rows.append(("index cache, cold (1 process)", f"{time.perf_counter() - t:.2f} s", f"{len(ds)} samples"))
    with tempfile.TemporaryDirectory() as cache:
        index._NUSC = None  # a cold cache: the devkit tables are read again
        t = time.perf_counter()
        NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=cache, index_workers=args.index_workers)
        rows.append((f"index cache, cold ({args.index_workers} processes)", f"{time.perf_counter() - t:.2f} s", ""))
        t = time.perf_counter()
        ds = NuScenesDataset(args.dataroot, args.version, args.split, cache_dir=cache, augment=GlobalAugment())
        rows.append(("index cache, warm", f"{time.perf_counter() - t:.3f} s", ""))

    f = ds[0]
    rows.append(("one frame", f"{len(f.lidar.points)} lidar pts", f"{len(f.radar.points)} radar pts, "
                 f"images {tuple(f.camera.images.shape)}"))
    for workers in args.workers:
        loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, sampler=SeededSampler(len(ds)),
                                             num_workers=workers, collate_fn=collate,
                                             persistent_workers=workers > 0)
        it = iter(loader)
        next(it)
        n, t = 0, time.perf_counter()
        for _ in range(args.batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            n += len(batch)
        dt = time.perf_counter() - t
        rows.append((f"DataLoader, {workers} workers, batch {args.batch_size}", f"{n / dt:.1f} frames/s",
                     f"{1000 * dt / n:.0f} ms/frame"))
        del it, loader

    if args.train_config:
        torch.set_num_threads(threads)
        rate = training_rate(ds, args.train_config, args.batch_size, args.train_steps)
        rows.append((f"training ({args.train_config}), batch {args.batch_size}", f"{rate:.1f} frames/s",
                     f"{1000 / rate:.0f} ms/frame"))
        best = max(float(r[1].split()[0]) for r in rows if r[0].startswith("DataLoader"))
        rows.append(("best DataLoader rate / training rate", f"{best / rate:.1f}x", ""))

    print(f"data pipeline on {args.dataroot} ({args.version}, {args.split})")
    table = table_text(rows)
    print(table)
    write_markdown(args.markdown, table)


def table_text(rows: list[tuple[str, str, str]]) -> str:
    """The markdown table of (what, measured, note) rows: the note in brackets after what was measured."""
    return "\n".join(markdown_table(HEADER, [(a, f"{b} ({c})" if c else b) for a, b, c in rows]))


def training_rate(ds: NuScenesDataset, config: str, batch_size: int, steps: int) -> float:
    """Frames/s of Lightning training steps (forward, backward, optimiser) of the config's model on a few batches
    held in memory, so that only the model is timed."""
    import pytorch_lightning as pl
    import yaml

    from fusion.module import GateFusionModule

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
