"""The command line: python -m datasets.synthetic --out DIR [--preset tiny|demo|full|nuscenes] [--scenes N]
[--samples-per-scene M] [--seed S] [--workers W] writes a world and prints its summary."""
from __future__ import annotations

import argparse
import os
from dataclasses import replace

from datasets.synthetic.config import PRESETS
from datasets.synthetic.generator import generate

DESCRIPTION = "Synthetic world generator: writes a complete dataset in the exact nuScenes on-disk format."


def format_summary(summary: dict) -> str:
    lines = [
        f"world {summary['dataroot']} ({summary['version']}): {summary['scenes']} scenes, {summary['samples']} "
        f"samples (train {summary['split_samples']['synth_train']}, val {summary['split_samples']['synth_val']})",
        "files: " + ", ".join(f"{k} {v}" for k, v in summary["files"].items()),
        f"size: {summary['bytes'] / 1e6:.1f} MB, time: {summary['seconds']:.1f} s",
        "annotations: " + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items()),
        "conditions (scenes): " + ", ".join(f"{k} {v}" for k, v in summary["conditions"].items()),
        f"samples with a sensor fault: {summary['fault_samples']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=DESCRIPTION)
    parser.add_argument("--out", required=True, help="output dataroot (must not exist or be empty)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--scenes", type=int, help="override the preset's number of scenes")
    parser.add_argument("--samples-per-scene", type=int, help="override the preset's key frames per scene")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    changes = {k: v for k, v in (("scenes", args.scenes), ("samples_per_scene", args.samples_per_scene),
                                 ("seed", args.seed)) if v is not None}
    config = replace(config, **changes)
    try:
        config.validate()
        summary = generate(args.out, config, workers=args.workers)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(format_summary(summary))
    return 0

