"""Benchmark of the synthetic world generator: times each preset into a temporary folder and prints a table.

    python bench/generate.py [--workers 2] [--full] [--keep DIR]

tiny and demo always; full only with --full. The worlds are deleted afterwards unless --keep is given.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.synthetic import PRESETS, generate  # noqa: E402

HEADER = ("preset", "scenes", "samples", "files", "MB", "seconds")  # the table docs/world.md quotes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--full", action="store_true", help="also time the full preset")
    parser.add_argument("--keep", help="write the worlds under this folder and keep them")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    presets = ["tiny", "demo"] + (["full"] if args.full else [])
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gatefusion-bench-"))
    rows = []
    try:
        for name in presets:
            s = generate(base / name, PRESETS[name], workers=args.workers)
            rows.append((name, s["scenes"], s["samples"], s["files"]["total"], s["bytes"] / 1e6, s["seconds"]))
            print(f"{name}: done in {s['seconds']:.1f} s", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nworkers={args.workers}, cpus={os.cpu_count()}")
    print("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER))
    for name, scenes, samples, files, mb, sec in rows:
        print(f"| {name} | {scenes} | {samples} | {files} | {mb:.1f} | {sec:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
