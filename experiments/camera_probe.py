"""Where does the camera branch of a trained detector lose the objects: in the image, or in the lift to BEV?

    python experiments/camera_probe.py [--ckpt runs/demo/checkpoints/last.ckpt] [--mode high] [--every 4]

On every `--every`-th val frame, runs the camera branch's image CNN (sensors/camera.py) and scores its two
per-cell predictions against what they are trained on, by condition (day, dusk, night) and depth range:
- 2D, the semantic logits against semantic_targets (which class's projected box covers each feature-map cell):
  on the cells an object covers, the share where the CNN sees an object (not background) and the share where it
  names the right class; on background cells, the share it calls background;
- depth, the depth distribution against the nearest LiDAR point in each cell (depth_loss's target): the share of
  cells whose most likely bin is within one bin of the truth, next to the same for what the ray geometry alone gives
  (the depth where the cell's ray meets the ground, sensors/camera.py ray_geometry, the CNN's input), and the
  median relative error of the expected depth, on object cells and on background cells.
Last, the ground depth each feature-map row spans (first camera, middle column): how finely the ground-contact cue
can place an object at all at this image size and stride.
Good 2D scores with poor depth on object cells mean the lift places what the CNN sees at the wrong range; poor 2D
scores mean the image CNN does not find the objects; day and night apart show whether it reads the image at all.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.nuscenes import NuScenesDataset  # noqa: E402
from fusion.checkpoint import load_checkpoint  # noqa: E402
from sensors.camera import (CAMERA_RESOLUTIONS, DEPTH_RANGE, GROUND_DEPTH_SCALE, lidar_depth,  # noqa: E402
                            ray_geometry, semantic_targets)
from sensors.frame import collate  # noqa: E402

RANGES = ((1.0, 20.0), (20.0, 40.0), (40.0, 65.0))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="runs/demo/checkpoints/last.ckpt")
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--version", default=None, help="default: the checkpoint's")
    p.add_argument("--split", default=None, help="default: the checkpoint's val split")
    p.add_argument("--mode", default="high", choices=tuple(CAMERA_RESOLUTIONS))
    p.add_argument("--every", type=int, default=4, help="every k-th frame of the split")
    args = p.parse_args(argv)

    model, data_hp = load_checkpoint(args.ckpt)
    camera = model.detector.camera.eval()
    dataset = NuScenesDataset(args.dataroot, args.version or data_hp.get("version", "v1.0-synth"),
                              args.split or data_hp.get("val_split", "synth_val"),
                              lidar_sweeps=data_hp.get("lidar_sweeps", 3), radar_sweeps=data_hp.get("radar_sweeps", 3),
                              image_size=tuple(data_hp.get("image_size", (320, 180))))
    c, d = camera.channels, camera.depth_bins
    lo, hi = DEPTH_RANGE
    centres = lo + (torch.arange(d, dtype=torch.float32) + 0.5) * (hi - lo) / d
    tally: dict = defaultdict(lambda: defaultdict(float))
    errors: dict = defaultdict(lambda: defaultdict(list))  # relative errors of the expected depth
    frames = 0
    for i in range(0, len(dataset), args.every):
        batch = collate([dataset[i]])
        data = batch.camera
        if data is None or not bool(batch.present[0, 0]):
            continue
        frames += 1
        with torch.no_grad():
            out = rearrange(camera.image_features(data, args.mode), "(b n) c h w -> b n c h w", b=1)
        depth_logits, semantic_logits = out[:, :, c:c + d].float(), out[:, :, c + d:].float()
        h, w = out.shape[-2:]
        target = semantic_targets(batch.gt, data, tuple(data.images.shape[-2:]), (h, w))
        truth = lidar_depth(data, batch.lidar.points, batch.lidar.batch_index, (h, w))
        prob = depth_logits.softmax(2)
        expected = (prob * centres[:, None, None]).sum(2)
        best = centres[prob.argmax(2)]
        H, W = data.images.shape[-2:]  # the ray through each feature-map cell's centre: the intrinsics scaled to it
        intrinsics = data.intrinsics.float() * torch.tensor([w / W, h / H, 1.0])[:, None]
        ground = ray_geometry(data.ego_T_cam, intrinsics, (h, w))[:, :, 0]  # GROUND_DEPTH_SCALE / depth
        ground_depth = torch.where(ground > 0, GROUND_DEPTH_SCALE / ground.clamp(min=1e-6),
                                   torch.full_like(ground, hi)).clamp(lo, hi)  # as far as the bins reach
        valid = data.valid.bool()[:, :, None, None].expand_as(target)
        pred_class = semantic_logits.argmax(2)
        light = next((t for t in ("day", "dusk", "night") if t in batch.meta[0].conditions), "other")
        for group in ("all", light):
            t = tally[group]
            obj, bg = valid & (target > 0), valid & (target == 0)
            t["object cells"] += float(obj.sum())
            t["object seen"] += float((obj & (pred_class > 0)).sum())
            t["class right"] += float((obj & (pred_class == target)).sum())
            t["background cells"] += float(bg.sum())
            t["background right"] += float((bg & (pred_class == 0)).sum())
            for kind, sel in (("object", obj), ("background", bg)):
                has = sel & torch.isfinite(truth)
                for r_lo, r_hi in RANGES:
                    m = has & (truth >= r_lo) & (truth < r_hi)
                    key = f"{kind} {r_lo:.0f}-{r_hi:.0f} m"
                    t[f"{key} n"] += float(m.sum())
                    t[f"{key} bin"] += float(((best - truth).abs() <= (hi - lo) / d)[m].sum())
                    t[f"{key} ground bin"] += float(((ground_depth - truth).abs() <= (hi - lo) / d)[m].sum())
                    errors[group][key].append(((expected - truth).abs() / truth)[m])
    if not frames:
        raise SystemExit(f"{args.split}: no frame with a camera")
    print(f"camera branch of {args.ckpt}, mode {args.mode}, {frames} frames (every {args.every}th)")
    print("| frames | object cells seen as object | right class | background right |")
    print("|---|---|---|---|")
    for group, t in tally.items():
        print(f"| {group} | {t['object seen'] / max(t['object cells'], 1):.2f} | "
              f"{t['class right'] / max(t['object cells'], 1):.2f} | "
              f"{t['background right'] / max(t['background cells'], 1):.2f} |")
    print("\n| frames | cells | range | LiDAR-hit cells | argmax within one bin | ground-ray prior within one bin | "
          "expected depth, median rel. error |")
    print("|---|---|---|---|---|---|---|")
    for group, t in tally.items():
        for kind in ("object", "background"):
            for r_lo, r_hi in RANGES:
                key = f"{kind} {r_lo:.0f}-{r_hi:.0f} m"
                n = max(t[f"{key} n"], 1)
                rel = torch.cat(errors[group][key])
                median = f"{float(rel.median()):.2f}" if len(rel) else "-"
                print(f"| {group} | {kind} | {r_lo:.0f}-{r_hi:.0f} m | {t[f'{key} n']:.0f} | "
                      f"{t[f'{key} bin'] / n:.2f} | {t[f'{key} ground bin'] / n:.2f} | {median} |")
    # How finely can a feature row place the ground? The ground depth along the first camera's middle column, per
    # row of the feature map (the image rows each one covers), up to the end of the depth bins.
    full = ray_geometry(data.ego_T_cam, data.intrinsics.float(), (H, W))[0, 0, 0, :, W // 2]
    spans = []
    for r in range(h):
        rows = full[r * H // h:(r + 1) * H // h]
        depth = GROUND_DEPTH_SCALE / rows[rows > 0]
        if len(depth) and float(depth.min()) < hi:
            spans.append(f"{float(depth.min()):.0f}-{min(float(depth.max()), 999):.0f} m")
    print(f"\nground depth spanned by each feature row ({h} rows for {H} image rows), first camera, middle column, "
          f"from the horizon down: " + ", ".join(spans))
    return {g: dict(t) for g, t in tally.items()}


if __name__ == "__main__":
    main()
