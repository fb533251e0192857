"""Is the front/back direction, the box axis and the velocity of objects in a trained detector's BEV features?

    python experiments/motion_probe.py [--ckpt runs/demo/checkpoints/last.ckpt] [--sensors lidar=fine,radar=on] \
        [--at head | bev | lidar | radar | camera]

Freezes the detector, and trains a fresh probe (two 3x3 conv blocks and a 1x1 conv) on one level of its features to
predict, at each box's centre cell, the direction logit, the velocity and the axis (sin 2yaw, cos 2yaw) that the head
itself predicts. --at: the output of the head's shared layer (head, the default), the decoder's output that the head
reads (bev), or one sensor branch's BEV features before fusion (lidar, radar, camera). Prints, every `--every` steps,
the probe's direction accuracy and mean axis error (degrees, modulo 180) on cars and its velocity error on moving
cars (|v| > 1 m/s) on the val frames, next to the detector head's own and to predicting 0. A probe far better than
the head means the information is in the features and the head does not read it out; probes at successive levels
show where it is lost.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.datamodule import NuScenesDataModule  # noqa: E402
from fusion.checkpoint import load_checkpoint  # noqa: E402
from fusion.detector import SensorConfig  # noqa: E402
from fusion.head import REG_DIMS, VEL  # noqa: E402
from sensors.bev import conv_block  # noqa: E402
from sensors.frame import collate  # noqa: E402
from sensors.names import CLASSES  # noqa: E402

VEL_UNIT = 5.0  # m/s per unit of the probe's velocity outputs


def centre_values(maps: torch.Tensor, targets: dict) -> torch.Tensor:
    """(B, C, H, W) -> (K, C) at the K box-centre cells of `targets` (CenterHead.targets)."""
    return maps.permute(0, 2, 3, 1)[targets["mask"]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="runs/demo/checkpoints/last.ckpt")
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--sensors", default="lidar=fine,radar=on")
    p.add_argument("--at", default="head", choices=("head", "bev", "lidar", "radar", "camera"),
                   help="which features the probe reads")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    model, data_hp = load_checkpoint(args.ckpt)
    model.eval().requires_grad_(False)
    detector, head = model.detector, model.detector.head
    config = SensorConfig.parse(args.sensors)
    if args.at in ("lidar", "radar", "camera") and getattr(config, args.at) == "off":
        p.error(f"--at {args.at}: that sensor is off in --sensors {args.sensors}")
    # the data as the checkpoint was trained on it (sweeps, image size, splits), as eval.py reads it
    keep = ("version", "train_split", "val_split", "lidar_sweeps", "radar_sweeps", "image_size", "cache_dir")
    data = NuScenesDataModule(args.dataroot, num_workers=1, augment=True, seed=args.seed,
                              **{k: tuple(v) if k == "image_size" else v for k, v in data_hp.items() if k in keep})
    data.setup("fit")
    train = torch.utils.data.DataLoader(data.train_set, batch_size=4, shuffle=True, num_workers=1,
                                        collate_fn=collate)
    val = [data.val_set[i] for i in range(0, len(data.val_set), 4)]

    def features(batch):
        """-> (the BEV features the head reads, the features the probe reads, targets) of a batch under `config`."""
        with torch.no_grad():
            decisions = config.decisions(batch.present)
            branches = detector.encode(batch, decisions)
            bev = detector.fused_bev(branches, decisions > 0)
            x = head.shared(bev) if args.at == "head" else bev if args.at == "bev" else branches[args.at]
            if x is None:  # no frame of the batch has that sensor: its branch's features are zeros
                x = bev.new_zeros(len(batch), getattr(detector, args.at).channels, *bev.shape[-2:])
            return bev, x, head.targets(batch.gt)

    channels = features(collate([data.val_set[0]]))[1].shape[1]
    probe = torch.nn.Sequential(conv_block(channels, 32), conv_block(32, 32), torch.nn.Conv2d(32, 5, 1))
    axis = [REG_DIMS.index("sin2"), REG_DIMS.index("cos2")]
    opt = torch.optim.Adam(probe.parameters(), 3e-3)

    def evaluate() -> str:
        probe.eval()
        rows = []
        with torch.no_grad():
            for i in range(0, len(val), 4):
                bev, x, t = features(collate(val[i:i + 4]))
                o = centre_values(probe(x), t)
                outputs = head(bev)
                own_dir = centre_values(outputs.direction, t)[:, 0]
                own, target = centre_values(outputs.regression, t), centre_values(t["regression"], t)
                rows.append((t["label"][t["mask"]], t["direction"][t["mask"]], o[:, 0], o[:, 1:3] * VEL_UNIT,
                             own_dir, own[:, VEL:VEL + 2], target[:, VEL:VEL + 2], o[:, 3:5], own[:, axis],
                             target[:, axis]))
        probe.train()
        label, direction, p_dir, p_vel, h_dir, h_vel, v, p_axis, h_axis, axis_t = (torch.cat(c) for c in zip(*rows))
        car = label == CLASSES.index("car")
        moving = car & (v.norm(dim=1) > 1.0)

        def acc(logit):
            return float(((logit[car] > 0).float() == direction[car]).float().mean())

        def err(pred):
            return float((pred[moving] - v[moving]).norm(dim=1).mean())

        def axis_deg(pred):  # angle between the predicted and true 2yaw, halved: the axis error modulo 180 degrees
            d = torch.atan2(pred[car, 0], pred[car, 1]) - torch.atan2(axis_t[car, 0], axis_t[car, 1])
            return float(torch.atan2(torch.sin(d), torch.cos(d)).abs().mean() / 2 * 180 / torch.pi)

        return (f"cars {int(car.sum())}: direction accuracy probe {acc(p_dir):.3f}, head {acc(h_dir):.3f}, axis error "
                f"probe {axis_deg(p_axis):.1f}, head {axis_deg(h_axis):.1f} deg | "
                f"moving cars {int(moving.sum())}: velocity error probe {err(p_vel):.2f}, head {err(h_vel):.2f}, "
                f"zero {err(torch.zeros_like(v)):.2f} m/s")

    step = 0
    while step < args.steps:
        for batch in train:
            _, x, t = features(batch)
            o = centre_values(probe(x), t)
            target = centre_values(t["regression"], t)
            loss = (F.binary_cross_entropy_with_logits(o[:, 0], t["direction"][t["mask"]])
                    + 0.1 * ((o[:, 1:3] * VEL_UNIT - target[:, VEL:VEL + 2]) ** 2).sum(1).mean()
                    + (o[:, 3:5] - target[:, axis]).abs().sum(1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % args.every == 0 or step == args.steps:
                print(f"step {step}: {evaluate()}", flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
