"""Summary and integrity check of a nuScenes-format dataroot.

    python -m datasets.inspect --dataroot D --version V [--split S]

Prints scenes, samples, files per sensor, class counts, conditions and faults of the split, then checks every
sensor file referenced by the split's samples (key frames and all their sweeps): it exists, is not empty, parses
with the devkit's readers (LidarPointCloud / RadarPointCloud) or PIL, and holds no NaN/inf. Exits 1 naming each
missing or corrupt file, 0 with "all N files OK".
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.index import parse_conditions, read_faults
from datasets.readers import LIDAR_MAX_RING
from datasets.splits import available_splits, check_dataroot, split_scenes
from sensors.names import CLASSES, LIDAR


def _sensor_of(channel: str) -> str:
    return "camera" if channel.startswith("CAM") else "lidar" if channel == LIDAR else "radar"


def check_file(path: Path, channel: str) -> str | None:
    """None if the file is fine, else what is wrong with it (devkit readers, PIL)."""
    from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud

    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    sensor = _sensor_of(channel)
    try:
        if sensor == "lidar":
            if size % 20:
                return f"truncated: {size} bytes is not a multiple of 20 (5 float32 per point)"
            raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
            ring = raw[:, 4][np.isfinite(raw[:, 4])]
            if np.any((ring != np.round(ring)) | (ring < 0) | (ring >= LIDAR_MAX_RING)):
                return "implausible ring column: not (x, y, z, intensity, ring) float32 rows"
            points = LidarPointCloud.from_file(str(path)).points
        elif sensor == "radar":
            points = RadarPointCloud.from_file(str(path)).points
        else:
            with Image.open(path) as im:
                im.load()
            return None
    except Exception as e:  # any reader failure is a corrupt file
        return f"unreadable: {type(e).__name__}: {e}" if str(e) else f"unreadable: {type(e).__name__}"
    if not np.all(np.isfinite(points)):
        return f"{int((~np.isfinite(points)).any(0).sum())} points with NaN/inf"
    return None


def inspect(dataroot: str, version: str, split: str | None = None, out=None) -> int:
    """Print the summary and check the files; returns the exit code (0 all OK, 1 problems)."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.nuscenes import NuScenes

    root = check_dataroot(dataroot, version)
    nusc = NuScenes(version=version, dataroot=str(root), verbose=False)
    names = set(split_scenes(root, version, split)) if split else {s["name"] for s in nusc.scene}
    scenes = [s for s in nusc.scene if s["name"] in names]
    faults = read_faults(root, version)

    samples = []
    for scene in scenes:
        token = scene["first_sample_token"]
        while token:
            samples.append(nusc.get("sample", token))
            token = samples[-1]["next"]

    tokens = {s["token"] for s in samples}
    channel_of = {c["token"]: nusc.get("sensor", c["sensor_token"])["channel"] for c in nusc.calibrated_sensor}
    files = {sd["filename"]: channel_of[sd["calibrated_sensor_token"]]  # key frames and sweeps: path -> channel
             for sd in nusc.sample_data if sd["sample_token"] in tokens}
    silent_ok = {sd["filename"] for sd in nusc.sample_data  # empty LiDAR files of a known (synthetic) fault
                 if sd["sample_token"] in tokens and "lidar" in faults.get(sd["sample_token"], ())}

    classes, conditions, fault_counts = Counter(), Counter(), Counter()
    for sample in samples:
        for ann_token in sample["anns"]:
            name = category_to_detection_name(nusc.get("sample_annotation", ann_token)["category_name"])
            if name:
                classes[name] += 1
        for s in faults.get(sample["token"], ()):
            fault_counts[s] += 1
    for scene in scenes:
        for tag in parse_conditions(scene.get("description", "")):
            conditions[tag] += scene["nbr_samples"]

    out = out or sys.stdout
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p(f"dataroot {root}  version {version}  split {split or '(all scenes)'}")
    p(f"splits available: {', '.join(available_splits(root, version))}")
    p(f"scenes {len(scenes)}  samples {len(samples)}")
    per_sensor = Counter(_sensor_of(c) for c in files.values())
    p("files: " + "  ".join(f"{s} {per_sensor[s]}" for s in ("camera", "lidar", "radar")))
    p("classes: " + "  ".join(f"{c} {classes[c]}" for c in CLASSES))
    p("conditions (samples): " + ("  ".join(f"{k} {v}" for k, v in sorted(conditions.items())) or "none"))
    p("faults (samples): " + ("  ".join(f"{k} {v}" for k, v in sorted(fault_counts.items())) or "none"))

    problems, known = [], 0
    for rel, channel in sorted(files.items()):
        why = check_file(root / rel, channel)
        if why and why.startswith("empty") and rel in silent_ok:
            known += 1
            p(f"known fault {root / rel}: silent LiDAR (in synthetic_faults.json)")
        elif why:
            problems.append((root / rel, why))
    for path, why in problems:
        p(f"BAD {path}: {why}")
    if problems:
        p(f"{len(problems)} of {len(files)} files missing or corrupt")
        return 1
    p(f"all {len(files)} files OK" + (f" ({known} empty LiDAR files of known faults)" if known else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-synth")
    ap.add_argument("--split", default=None, help="default: all scenes of the version")
    args = ap.parse_args(argv)
    try:
        return inspect(args.dataroot, args.version, args.split)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
