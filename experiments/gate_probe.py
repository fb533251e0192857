"""Does the gate choose what the per-frame detection loss would choose? Its loss estimates against the losses measured.

    python experiments/gate_probe.py [--ckpt runs/demo-gated-seed1/checkpoints/last.ckpt] [--every 2] [--budget 0.5]

A "regression" gate (fusion/gate.py) predicts, per frame, the detection loss of every configuration and picks the
lowest after a price on cost. On every `--every`-th frame of --split (the val split by default) this runs the gated checkpoint's detector under each of
the configurations and measures the frame's detection loss (the head's frame_losses, what the gate is trained to
predict), beside the gate's predictions. Prints: how well the predictions rank the configurations within a frame
(mean Spearman correlation over frames) and how well they track each configuration's loss difference to full fusion
across frames (Pearson); then, at --budget, with each one's price set so that the mean cost over these frames is
the budget, what the gate chooses, what the measured losses would choose (the loss oracle) and what the gate
chooses with its mean error per configuration on training frames removed (eval.py --gate-offsets), and the mean
measured loss of each choice and of the static configurations that cost no more. Where the loss oracle chooses as
the gate does, the gate follows its objective and any gap in NDS is the objective's (per-frame loss is not NDS);
where they differ, the gate's estimates are the cause.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets.nuscenes import NuScenesDataset  # noqa: E402
from fusion.checkpoint import load_checkpoint  # noqa: E402
from fusion.operating_points import gate_offsets  # noqa: E402
from fusion.gate import configurations  # noqa: E402
from sensors.frame import collate  # noqa: E402


def priced_choice(scores: torch.Tensor, allowed: torch.Tensor, costs: torch.Tensor, budget: float) -> torch.Tensor:
    """(F, K) losses (lower is better) -> (F,) argmin(loss + price * cost) over the allowed configurations, the price
    found by bisection so that the mean cost is at most the budget."""
    def choose(price: float) -> torch.Tensor:
        return (scores + price * costs).masked_fill(~allowed, float("inf")).argmin(1)

    lo, hi = 0.0, 1.0
    while float(costs[choose(hi)].mean()) > budget and hi < 1e6:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(costs[choose(mid)].mean()) > budget else (lo, mid)
    return choose(hi)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().float(), b.argsort().argsort().float()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="runs/demo-gated-seed1/checkpoints/last.ckpt")
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--split", default=None, help="default: the checkpoint's val split (its train split: what the gate "
                                                 "was fit on)")
    p.add_argument("--every", type=int, default=2, help="every k-th frame of the split")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--gate-offsets", type=int, default=48,
                   help="also the gate with its mean error per configuration removed, measured on this many frames of "
                        "the checkpoint's train split as eval.py --gate-offsets does (0: not)")
    args = p.parse_args(argv)

    model, data_hp = load_checkpoint(args.ckpt)
    if model.gate is None or model.gate.estimator != "regression":
        raise SystemExit(f"{args.ckpt}: not a gated checkpoint with the regression gate")
    model.eval()
    gate = model.gate
    configs = configurations()
    split = args.split or data_hp.get("val_split", "synth_val")

    def dataset(split: str) -> NuScenesDataset:
        return NuScenesDataset(args.dataroot, data_hp.get("version", "v1.0-synth"), split,
                               lidar_sweeps=data_hp.get("lidar_sweeps", 3), radar_sweeps=data_hp.get("radar_sweeps", 3),
                               image_size=tuple(data_hp.get("image_size", (320, 180))))

    def losses(split: str, every: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F, K) predicted and measured losses and (F, K) allowed, on every `every`-th frame of `split`."""
        frames = dataset(split)
        predicted, measured, allowed = [], [], []
        with torch.no_grad():
            for i in range(0, len(frames), every):
                batch = collate([frames[i]])
                predicted.append(gate.risk(batch)[0])
                allowed.append(gate.allowed(batch.present)[0])
                measured.append(model.configuration_losses(batch)[0])
        return torch.stack(predicted), torch.stack(measured), torch.stack(allowed)

    predicted, measured, allowed = losses(split, args.every)
    costs = gate.costs
    ok = allowed.all(1)  # frames with every sensor: the rankings compare all configurations
    rank = torch.tensor([spearman(predicted[f], measured[f]) for f in torch.nonzero(ok).flatten()])
    print(f"{args.ckpt}: {len(measured)} frames (every {args.every}th of {split}), {len(configs)} configurations")
    print(f"ranking of the configurations within a frame, gate vs measured loss: mean Spearman {rank.mean():.2f} "
          f"over {int(ok.sum())} frames with every sensor")
    print("\n| configuration | cost | measured loss, mean | predicted, mean | difference to full across frames: "
          "Pearson (predicted vs measured) |")
    print("|---|---|---|---|---|")
    for k, c in enumerate(configs):
        dm, dp = measured[ok, k] - measured[ok, 0], predicted[ok, k] - predicted[ok, 0]
        r = float(torch.corrcoef(torch.stack([dp, dm]))[0, 1]) if k else float("nan")
        print(f"| {c} | {float(costs[k]):.2f} | {float(measured[ok, k].mean()):.3f} | "
              f"{float(predicted[ok, k].mean()):.3f} | {r:.2f} |")
    out = {"spearman": float(rank.mean())}
    frames = torch.arange(len(measured))
    choosers = [("gate (predicted losses)", predicted), ("loss oracle (measured losses)", measured)]
    if args.gate_offsets:
        train_split = data_hp.get("train_split", "synth_train")
        offset = gate_offsets(model, dataset(train_split), args.gate_offsets, "cpu")
        print(f"\ngate's mean error per configuration on {args.gate_offsets} {train_split} frames (measured - "
              f"predicted): " + ", ".join(f"{c} {float(o):+.3f}" for c, o in zip(configs, offset)))
        choosers.append((f"gate, mean errors removed ({train_split})", predicted + offset))
    print(f"\nat budget {args.budget} (each one's price set so that the mean cost over these frames is the budget):")
    print("| chooser | mean cost | mean measured loss | its choices (share of frames) |")
    print("|---|---|---|---|")
    for name, scores in choosers:
        k = priced_choice(scores, allowed, costs, args.budget)
        shares = ", ".join(f"{configs[j]} {n / len(k):.2f}" for j, n in Counter(k.tolist()).most_common(3))
        loss = float(measured[frames, k].mean())
        out[name] = loss
        print(f"| {name} | {float(costs[k].mean()):.2f} | {loss:.3f} | {shares} |")
    for k, c in enumerate(configs):
        if float(costs[k]) <= args.budget + 0.02 and bool(allowed[:, k].all()):
            print(f"| static {c} | {float(costs[k]):.2f} | {float(measured[:, k].mean()):.3f} | every frame |")
    return out


if __name__ == "__main__":
    main()
