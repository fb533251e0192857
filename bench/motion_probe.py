"""Is the front/back direction and the velocity of objects in a trained detector's BEV features?

    python bench/motion_probe.py [--ckpt runs/demo/checkpoints/last.ckpt] [--sensors lidar=fine,radar=on]

Freezes the detector, and trains a fresh probe (two 3x3 conv blocks and a 1x1 conv) on the features its head reads
(the output of the head's shared layer) to predict, at each box's centre cell, the direction logit and the velocity
that the head itself predicts. Prints, every `--every` steps, the probe's direction accuracy on cars and its velocity
error on moving cars (|v| > 1 m/s) on the val frames, next to the detector head's own and to predicting 0. A probe
far better than the head means the information is in the features and the head does not read it out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.datamodule import NuScenesDataModule  # noqa: E402
from fusion.detector import SensorConfig  # noqa: E402
from fusion.head import VEL  # noqa: E402
from fusion.module import GateFusionModule  # noqa: E402
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
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    model = GateFusionModule.load_from_checkpoint(args.ckpt, map_location="cpu").eval()
    model.requires_grad_(False)
    detector, head = model.detector, model.detector.head
    config = SensorConfig.parse(args.sensors)
    data = NuScenesDataModule(args.dataroot, num_workers=1, augment=True, seed=args.seed)
    data.setup("fit")
    train = torch.utils.data.DataLoader(data.train_set, batch_size=4, shuffle=True, num_workers=1,
                                        collate_fn=collate)
    val = [data.val_set[i] for i in range(0, len(data.val_set), 4)]

    def features(batch):
        """-> (the backbone's BEV features, the head's shared features, targets) of a batch under `config`."""
        with torch.no_grad():
            decisions = config.decisions(batch.present)
            bev = detector.fused_bev(detector.encode(batch, decisions), decisions > 0)
            return bev, head.shared(bev), head.targets(batch.gt)

    channels = head.shared[0].out_channels
    probe = torch.nn.Sequential(conv_block(channels, 32), conv_block(32, 32), torch.nn.Conv2d(32, 3, 1))
    opt = torch.optim.Adam(probe.parameters(), 3e-3)

    def evaluate() -> str:
        probe.eval()
        rows = []
        with torch.no_grad():
            for i in range(0, len(val), 4):
                bev, x, t = features(collate(val[i:i + 4]))
                o = centre_values(probe(x), t)
                outputs = head(bev)
                own_dir = centre_values(outputs["direction"], t)[:, 0]
                own_vel = centre_values(outputs["regression"], t)[:, VEL:VEL + 2]
                v = centre_values(t["regression"], t)[:, VEL:VEL + 2]
                rows.append((t["label"][t["mask"]], t["direction"][t["mask"]], o[:, 0], o[:, 1:] * VEL_UNIT,
                             own_dir, own_vel, v))
        probe.train()
        label, direction, p_dir, p_vel, h_dir, h_vel, v = (torch.cat(c) for c in zip(*rows))
        car = label == CLASSES.index("car")
        moving = car & (v.norm(dim=1) > 1.0)

        def acc(logit):
            return float(((logit[car] > 0).float() == direction[car]).float().mean())

        def err(pred):
            return float((pred[moving] - v[moving]).norm(dim=1).mean())

        return (f"cars {int(car.sum())}: direction accuracy probe {acc(p_dir):.3f}, head {acc(h_dir):.3f} | "
                f"moving cars {int(moving.sum())}: velocity error probe {err(p_vel):.2f}, head {err(h_vel):.2f}, "
                f"zero {err(torch.zeros_like(v)):.2f} m/s")

    step = 0
    while step < args.steps:
        for batch in train:
            _, x, t = features(batch)
            o = centre_values(probe(x), t)
            v = centre_values(t["regression"], t)[:, VEL:VEL + 2]
            loss = (F.binary_cross_entropy_with_logits(o[:, 0], t["direction"][t["mask"]])
                    + 0.1 * ((o[:, 1:] * VEL_UNIT - v) ** 2).sum(1).mean())
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
