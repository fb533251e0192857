"""How much does the LiDAR show which end of a parked vehicle is its front?

    python bench/heading_cue.py [--dataroot data/synth-demo] [--split synth_val] [--every 4] [--max-range 25]

A still object's front/back is the part of its heading that velocity cannot give (issue #16: with the radar's
Doppler map the moving objects' heading is learned, the still ones' stays at chance). On real vehicles, and in the
synthetic world (datasets/synthetic/lidar.py FRONT_NOTCH), the front end is lower than the cabin or the load. For
every `--every`-th frame of the split and each still vehicle (|v| < 0.5 m/s) within --max-range metres, this takes
the frame's LiDAR points (all its sweeps, as the detector gets them) inside the box, in the box's own frame, and
compares the highest point of its front end (the outer 15% of its length) with that of its
back end. Prints per class: the still vehicles, the share with points at both ends, and among those the share whose
front end is the lower one and the share whose ends differ by more than --margin metres; the same for all ranges.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default="synth_val")
    p.add_argument("--every", type=int, default=4, help="every k-th frame of the split")
    p.add_argument("--max-range", type=float, default=25.0, help="metres from the ego")
    p.add_argument("--margin", type=float, default=0.2, help="metres: ends that differ by more than this")
    p.add_argument("--lidar-sweeps", type=int, default=3)
    args = p.parse_args(argv)

    dataset = NuScenesDataset(args.dataroot, args.version, args.split, lidar_sweeps=args.lidar_sweeps)
    tally: dict = defaultdict(lambda: defaultdict(int))
    for i in range(0, len(dataset), args.every):
        frame = dataset[i]
        if frame.lidar is None:
            continue
        points = frame.lidar.points.float()
        for box, label in zip(frame.gt.boxes, frame.gt.labels):
            name = CLASSES[int(label)]
            speed = math.hypot(float(box[7]), float(box[8])) if len(box) > 8 else 0.0
            if name not in VEHICLES or not speed < 0.5:  # NaN velocity counts as unknown: left out
                continue
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
