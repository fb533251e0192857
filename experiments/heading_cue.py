"""How much does the LiDAR show which end of a parked vehicle is its front?

    python experiments/heading_cue.py [--dataroot data/synth-demo] [--split synth_val] [--every 4] [--max-range 25]

A still object's front/back is the part of its heading that velocity cannot give (with the radar's
Doppler map the moving objects' heading is learned, the still ones' stays at chance). On real vehicles, and in the
synthetic world (datasets/synthetic/lidar.py FRONT_NOTCH), the front end is lower than the cabin or the load. For
every `--every`-th frame of the split and each still vehicle (|v| < 0.5 m/s) within --max-range metres, this takes
the frame's LiDAR points (all its sweeps, as the detector gets them) inside the box, in the box's own frame, and
compares the highest point of its front end (the outer 15% of its length) with that of its
back end. Prints per class: the still vehicles, the share with points at both ends, and among those the share whose
front end is the lower one and the share whose ends differ by more than --margin metres; the same for all ranges.

--learn: how well could a detector read it? A logistic regression on each still vehicle's box-aligned height
profile (PROFILE_BINS bins along the box's axis, the highest point of each, as a fraction of the box's height) learns
on --train-split which end of the axis is the front, with the detector's own target and sign convention (fusion/
head.py: is cos(yaw) >= 0; the axis is what the head regresses), and is scored on the --split boxes, exact and
moved as the detector's boxes are (centre, axis and size noise: --noise-m, --noise-deg, 5%), per class and range
(one regression per class, trained on moved boxes).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.nuscenes import NuScenesDataset  # noqa: E402
from sensors.geometry import box_frame  # noqa: E402
from sensors.names import CLASSES  # noqa: E402

VEHICLES = ("car", "truck", "bus", "construction_vehicle", "trailer")


def end_heights(points: torch.Tensor, box: torch.Tensor) -> tuple[float | None, float | None]:
    """(P, >=3) points, one (>=7,) box (x, y, z, l, w, h, yaw) -> highest point (metres above the box's bottom) of
    its front end and of its back end (the outer 15% of the length at each end), None where no point
    falls in that end."""
    l, w, h = (float(v) for v in box[3:6])
    along, across, up = torch.from_numpy(box_frame(points.numpy(), box[None, :7].numpy())[:, 0]).T
    up = up + h / 2  # above the box's bottom
    inside = (across.abs() <= w / 2 + 0.1) & (up > 0.05) & (up <= h + 0.2)
    ends = []
    for sign in (1.0, -1.0):
        sel = inside & (sign * along >= 0.35 * l) & (sign * along <= 0.5 * l + 0.1)
        ends.append(float(up[sel].max()) if bool(sel.any()) else None)
    return ends[0], ends[1]


PROFILE_BINS = 8


def axis_profile(points: torch.Tensor, box: torch.Tensor) -> np.ndarray:
    """(P, >=3) points, one (>=7,) box -> (2 * PROFILE_BINS,) features of its points seen along the axis
    representative with cos >= 0 (the head's convention): per bin along the length, the highest point above the
    box's bottom as a fraction of its height (0 where empty) and whether the bin has any point."""
    b = box[:7].clone()
    if math.cos(float(b[6])) < 0:
        b[6] = b[6] + math.pi
    l, w, h = (float(v) for v in b[3:6])
    along, across, up = torch.from_numpy(box_frame(points.numpy(), b[None].numpy())[:, 0]).T
    up = up + h / 2
    inside = (across.abs() <= w / 2 + 0.2) & (up > 0.05) & (up <= h + 0.3) & (along.abs() <= l / 2 + 0.2)
    idx = ((along[inside] / (l + 0.4) + 0.5) * PROFILE_BINS).long().clamp(0, PROFILE_BINS - 1)
    top = torch.zeros(PROFILE_BINS, dtype=torch.float64).scatter_reduce(0, idx, (up[inside] / h).double(), "amax")
    seen = torch.zeros(PROFILE_BINS, dtype=torch.float64).index_fill(0, idx, 1.0)
    return torch.cat([top, seen]).numpy()


def still_vehicles(dataset, every: int):
    """(LiDAR points, box, class name) of each still vehicle (|v| < 0.5 m/s; NaN velocity counts as unknown and is
    left out) in every `every`-th frame with a LiDAR sweep."""
    for i in range(0, len(dataset), every):
        frame = dataset[i]
        if frame.lidar is None:
            continue
        points = frame.lidar.points.float()
        for box, label in zip(frame.gt.boxes, frame.gt.labels):
            name = CLASSES[int(label)]
            if name in VEHICLES and math.hypot(float(box[7]), float(box[8])) < 0.5:
                yield points, box, name


def still_vehicle_profiles(dataset, every: int, noise: tuple[float, float], rng: np.random.Generator):
    """Features, labels (cos(yaw) >= 0), class names and ranges of the still vehicles of every `every`-th frame;
    noise = (centre metres, axis degrees): the box is moved by that much (Gaussian) before the profile is read."""
    X, y, names, ranges = [], [], [], []
    for points, box, name in still_vehicles(dataset, every):
        moved = box.clone()
        moved[:2] += torch.from_numpy(rng.normal(0, noise[0], 2)).float()
        moved[3:6] *= torch.from_numpy(1 + rng.normal(0, 0.05, 3)).float()
        moved[6] += math.radians(float(rng.normal(0, noise[1])))
        X.append(axis_profile(points, moved))
        y.append(math.cos(float(box[6])) >= 0)
        names.append(name)
        ranges.append(math.hypot(float(box[0]), float(box[1])))
    return np.array(X), np.array(y), np.array(names), np.array(ranges)


def learn(args) -> dict:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train = NuScenesDataset(args.dataroot, args.version, args.train_split, lidar_sweeps=args.lidar_sweeps)
    val = NuScenesDataset(args.dataroot, args.version, args.split, lidar_sweeps=args.lidar_sweeps)
    X, y, names, _ = still_vehicle_profiles(train, args.every, (args.noise_m, args.noise_deg), rng)
    models = {n: LogisticRegression(max_iter=5000).fit(X[names == n], y[names == n]) for n in VEHICLES
              if len(set(y[names == n])) == 2}  # one per class: a bus's front is not a car's
    out = {}
    print(f"front/back of still vehicles from the box-aligned height profile: a logistic regression per class on "
          f"{len(y)} {args.train_split} boxes (moved), scored on every {args.every}th {args.split} frame")
    print("| boxes | class | range | vehicles | right end |")
    print("|---|---|---|---|---|")
    for boxes, noise in (("exact", (0.0, 0.0)), ("moved", (args.noise_m, args.noise_deg))):
        Xv, yv, nv, rv = still_vehicle_profiles(val, args.every, noise, rng)
        right = np.array([bool(models[n].predict(x[None])[0]) == t if n in models else False
                          for x, t, n in zip(Xv, yv, nv)])
        rows = [(n, r, (nv == n if n != "all" else nv == nv) & sel) for n in (*VEHICLES, "all")
                for r, sel in ((f"<= {args.max_range:g} m", rv <= args.max_range), ("any", rv == rv))]
        for name, where, sel in rows:
            if sel.any():
                out[(boxes, name, where)] = float(right[sel].mean())
                print(f"| {boxes} | {name} | {where} | {int(sel.sum())} | {right[sel].mean():.2f} |")
    # What that allows for mAOE (the mean over the devkit's classes with a heading: all but the cone): even with
    # every moving object's heading and every axis right, a still object whose front end is wrong costs pi (a
    # barrier's heading is scored modulo pi: 0). Classes without a cue in the profile are at chance, no worse.
    total, still = defaultdict(int), defaultdict(int)
    for i in range(0, len(val), args.every):
        for box, label in zip(val[i].gt.boxes, val[i].gt.labels):
            name = CLASSES[int(label)]
            total[name] += 1
            still[name] += not math.hypot(float(box[7]), float(box[8])) >= 0.5
    print(f"\nstill share per class ({args.split}): " + ", ".join(f"{n} {still[n] / max(total[n], 1):.2f}"
                                                            for n in CLASSES if n != "traffic_cone"))
    for boxes in ("exact", "moved"):
        errors = [0.0 if n == "barrier" else still[n] / max(total[n], 1) * math.pi *
                  (1 - max(out.get((boxes, n, "any"), 0.5), 0.5)) for n in CLASSES if n != "traffic_cone"]
        out[(boxes, "mAOE floor")] = float(np.mean(errors))
        print(f"mAOE floor with {boxes} boxes: {np.mean(errors):.2f} (moving objects and axes perfect, still ones' "
              f"front end from the profile, chance where it shows none)")
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default="synth_val")
    p.add_argument("--every", type=int, default=4, help="every k-th frame of the split")
    p.add_argument("--max-range", type=float, default=25.0, help="metres from the ego")
    p.add_argument("--margin", type=float, default=0.2, help="metres: ends that differ by more than this")
    p.add_argument("--lidar-sweeps", type=int, default=3)
    p.add_argument("--learn", action="store_true", help="fit and score the box-aligned profile classifier")
    p.add_argument("--train-split", default="synth_train")
    p.add_argument("--noise-m", type=float, default=0.3, help="--learn: centre noise of the moved boxes, metres")
    p.add_argument("--noise-deg", type=float, default=8.0, help="--learn: axis noise of the moved boxes, degrees")
    args = p.parse_args(argv)
    if args.learn:
        return learn(args)

    dataset = NuScenesDataset(args.dataroot, args.version, args.split, lidar_sweeps=args.lidar_sweeps)
    tally: dict = defaultdict(lambda: defaultdict(int))
    for points, box, name in still_vehicles(dataset, args.every):
        near = math.hypot(float(box[0]), float(box[1])) <= args.max_range
        front, back = end_heights(points, box)
        for key in ((name, "near"), ("all", "near")) if near else ():
            t = tally[key]
            t["vehicles"] += 1
            if front is not None and back is not None:
                t["both ends"] += 1
                t["front lower"] += front < back
                t["differ"] += abs(front - back) > args.margin
        t = tally[("all", "any range")]
        t["vehicles"] += 1
        t["both ends"] += front is not None and back is not None
    print(f"still vehicles (|v| < 0.5 m/s) in every {args.every}th frame of {args.split}; LiDAR, {args.lidar_sweeps} "
          f"sweeps")
    print(f"| class | range | still vehicles | with points at both ends | front end lower | ends differ by > "
          f"{args.margin} m |")
    print("|---|---|---|---|---|---|")
    for (name, where), t in sorted(tally.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        both = max(t["both ends"], 1)
        lower = f"{t['front lower'] / both:.2f}" if where == "near" else "-"
        differ = f"{t['differ'] / both:.2f}" if where == "near" else "-"
        range_text = f"<= {args.max_range:g} m" if where == "near" else "any"
        print(f"| {name} | {range_text} | {t['vehicles']} | {t['both ends'] / max(t['vehicles'], 1):.2f} | {lower} | "
              f"{differ} |")
    return {k: dict(v) for k, v in tally.items()}


if __name__ == "__main__":
    main()
