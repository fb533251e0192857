"""The gate's operating points: for a grid of budgets, the price at which the gate's mean cost is that budget, and
the gate's mean error per configuration (its offsets), both measured on training frames and stored in the
checkpoint, so that evaluating at a budget needs no training data (a dataroot without the training split serves).

train.py measures them at the end of fitting and writes them into every checkpoint file of the run
(`store`); fusion/evaluate.py reads them back (`stored`). Between two grid budgets the price is interpolated
linearly, an approximation (the gate's logits depend on the budget too, so the budget holds less tightly there than
on the grid); outside the grid, or for a checkpoint without them, evaluation recalibrates on a named split.
`python -m fusion.operating_points --ckpt C` (re)measures them for an existing checkpoint.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

BUDGETS = (0.35, 0.5, 0.65, 0.8, 0.9)
OFFSET_FRAMES = 48  # training frames the gate's mean error per configuration is measured on
CALIBRATION_FRAMES = 200  # training frames each budget's price is calibrated on
CHECKPOINT_KEY = "gate_operating_points"


@dataclass
class OperatingPoints:
    """budgets (ascending) and the price of each; offsets: (K,) the gate's mean error per configuration (measured
    minus predicted detection loss, in fusion.gate.configurations() order; zeros for a gate that does not regress
    losses); what they were measured on: split, calibration_frames, offset_frames."""
    budgets: list[float]
    prices: list[float]
    offsets: list[float]
    split: str
    calibration_frames: int
    offset_frames: int

    def covers(self, budget: float) -> bool:
        return self.budgets[0] - 1e-9 <= budget <= self.budgets[-1] + 1e-9

    def price(self, budget: float) -> float:
        """The price at `budget`: the stored one on a grid budget, linear between two; ValueError outside."""
        b = self.budgets
        if not self.covers(budget):
            raise ValueError(f"budget {budget} is outside the checkpoint's operating points ({b[0]} to {b[-1]}): "
                             f"recalibrate with --calibrate-on SPLIT")
        for i in range(len(b) - 1):
            if budget <= b[i + 1]:
                t = 0.0 if b[i + 1] == b[i] else (budget - b[i]) / (b[i + 1] - b[i])
                return (1 - t) * self.prices[i] + t * self.prices[i + 1]
        return self.prices[-1]

    @classmethod
    def from_dict(cls, d: dict, where: str) -> OperatingPoints:
        """From a checkpoint's stored dict; ValueError naming `where` when it is not one."""
        from fusion.gate import configurations

        try:
            points = cls(budgets=[float(x) for x in d["budgets"]], prices=[float(x) for x in d["prices"]],
                         offsets=[float(x) for x in d["offsets"]], split=str(d["split"]),
                         calibration_frames=int(d["calibration_frames"]), offset_frames=int(d["offset_frames"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: {CHECKPOINT_KEY} is not a set of operating points ({e!r})") from None
        if (not points.budgets or len(points.budgets) != len(points.prices) or points.budgets != sorted(points.budgets)
                or len(points.offsets) != len(configurations())):
            raise ValueError(f"{where}: {CHECKPOINT_KEY} needs ascending budgets, one price each and "
                             f"{len(configurations())} offsets")
        return points


def evenly_spread(dataset, frames: int):
    """A Subset of min(frames, len(dataset)) frames of `dataset`, evenly spread over it."""
    from torch.utils.data import Subset

    from datasets.evaluation import spread

    return Subset(dataset, sorted(spread(len(dataset), frames)))


def gate_offsets(model, dataset, frames: int, device, num_workers: int = 0) -> torch.Tensor:
    """(K,) the gate's mean error per configuration, measured minus predicted detection loss, over the frames with
    every sensor present among `frames` frames of `dataset` (evenly spread; the training split)."""
    from torch.utils.data import DataLoader

    from sensors.frame import collate

    subset = evenly_spread(dataset, frames)
    errors = []
    with torch.no_grad():
        for batch in DataLoader(subset, batch_size=1, num_workers=num_workers, collate_fn=collate):
            batch = batch.to(device)
            if bool(batch.present.all()):
                errors.append(model.configuration_losses(batch) - (model.gate.risk(batch) - model.gate.offset))
    if not errors:
        raise ValueError(f"gate offsets: none of {len(subset)} training frames has every sensor")
    return torch.cat(errors).mean(0)


def calibrate(model, dataset, budgets: list[float], frames: int, device, num_workers: int = 0) -> list[float]:
    """The price per budget at which the gate's mean cost over `frames` frames of `dataset` (evenly spread; the
    training split) is that budget x full: only the gate runs on them, one pass over the frames for all budgets."""
    from torch.utils.data import DataLoader

    from fusion.gate import calibrate_price
    from sensors.frame import collate

    if min(frames, len(dataset)) < 1:
        raise ValueError(f"calibration frames must be >= 1 and the training split non-empty (got {frames}, "
                         f"{len(dataset)} frames)")
    logits: list[list[torch.Tensor]] = [[] for _ in budgets]
    with torch.no_grad():
        for batch in DataLoader(evenly_spread(dataset, frames), batch_size=8, num_workers=num_workers,
                                collate_fn=collate):
            batch = batch.to(device)
            for i, budget in enumerate(budgets):
                logits[i].append(model.gate(batch, torch.full((len(batch),), budget, device=device)))
    return [calibrate_price(model.gate, torch.cat(lg), budget) for lg, budget in zip(logits, budgets)]


def measure(model, dataset, split: str, budgets=BUDGETS, calibration_frames: int = CALIBRATION_FRAMES,
            offset_frames: int = OFFSET_FRAMES, device="cpu", num_workers: int = 0) -> OperatingPoints:
    """The gate's offsets (regression gates; set into model.gate.offset, zeros otherwise or with offset_frames 0),
    then the price of each budget with those offsets removed, on `dataset` (the split named `split`). Budgets below
    the cheapest configuration's share of full cannot be met and are left out."""
    if offset_frames and model.gate.estimator == "regression":
        model.gate.offset.copy_(gate_offsets(model, dataset, offset_frames, device, num_workers))
    reachable = sorted(float(b) for b in budgets if b >= model.gate.min_budget)
    if not reachable:
        raise ValueError(f"operating points: every budget of {list(budgets)} is below the cheapest configuration's "
                         f"share of full ({model.gate.min_budget:.3f})")
    budgets = reachable
    prices = calibrate(model, dataset, budgets, calibration_frames, device, num_workers)
    return OperatingPoints(budgets, prices, [float(o) for o in model.gate.offset], split,
                           min(calibration_frames, len(dataset)), min(offset_frames, len(dataset)))


def data_settings(data_hp: dict, cache_dir: str | None) -> dict:
    """NuScenesDataset's keyword arguments that a checkpoint's data settings (its datamodule hyperparameters)
    fix: sweeps, image size; and where the index cache goes."""
    from sensors.names import IMAGE_SIZE

    return dict(lidar_sweeps=data_hp.get("lidar_sweeps", 3), radar_sweeps=data_hp.get("radar_sweeps", 3),
                image_size=tuple(data_hp.get("image_size", IMAGE_SIZE)), cache_dir=cache_dir)


def stored(ckpt_path: str | Path) -> OperatingPoints | None:
    """The operating points stored in a checkpoint file, or None where it has none."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    d = ckpt.get(CHECKPOINT_KEY) if isinstance(ckpt, dict) else None
    return OperatingPoints.from_dict(d, str(ckpt_path)) if d is not None else None


def store(ckpt_path: str | Path, points: OperatingPoints) -> None:
    """Write `points` into the checkpoint file (a new file moved over it, so that an interrupted write loses
    nothing)."""
    path = Path(ckpt_path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    ckpt[CHECKPOINT_KEY] = asdict(points)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def measure_checkpoint(ckpt_path: str | Path, budgets=BUDGETS, dataroot: str | None = None, split: str | None = None,
                       device: str = "cpu", num_workers: int = 0) -> OperatingPoints:
    """Operating points of a gated checkpoint file on its training split (or `split`) of its dataroot (or
    `dataroot`), with the data settings it was trained with."""
    from datasets.nuscenes import NuScenesDataset
    from fusion.checkpoint import load_checkpoint

    model, data_hp = load_checkpoint(ckpt_path)
    if model.gate is None:
        raise ValueError(f"checkpoint {ckpt_path} has no gate (trained with gate: false): no operating points")
    model = model.to(device).eval()
    split = split or data_hp.get("train_split", "train")
    dataset = NuScenesDataset(dataroot or data_hp["dataroot"], data_hp.get("version", "v1.0-trainval"), split,
                              **data_settings(data_hp, data_hp.get("cache_dir")))
    return measure(model, dataset, split, budgets, device=device, num_workers=num_workers)


def store_for_run(ckpt_paths: list[str], budgets=BUDGETS, device: str = "cpu") -> None:
    """Measure and store operating points in each checkpoint file of a finished run, unless it has them for these
    budgets already; files holding the same weights share one measurement."""
    done: list[tuple[dict, OperatingPoints]] = []
    budgets = sorted(float(b) for b in budgets)
    for path in dict.fromkeys(p for p in ckpt_paths if p and Path(p).is_file()):
        have = stored(path)
        if have is not None and set(have.budgets) <= set(budgets) and have.budgets[-1] == budgets[-1]:
            continue
        weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        points = next((p for w, p in done if w.keys() == weights.keys()
                       and all(torch.equal(w[k], weights[k]) for k in w)), None)
        if points is None:
            points = measure_checkpoint(path, budgets, device=device)
            done.append((weights, points))
        store(path, points)
        print(f"{path}: gate operating points on {points.calibration_frames} frames of {points.split}: "
              + ", ".join(f"budget {b} price {p:.4f}" for b, p in zip(points.budgets, points.prices)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a gated checkpoint written by train.py")
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    p.add_argument("--dataroot", default=None, help="where its training split is (default: the one it trained on)")
    p.add_argument("--split", default=None, help="the split to measure on (default: its training split)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    points = measure_checkpoint(args.ckpt, args.budgets, args.dataroot, args.split, args.device)
    store(args.ckpt, points)
    print(f"{args.ckpt}: " + ", ".join(f"budget {b} price {x:.4f}" for b, x in zip(points.budgets, points.prices)))


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        raise SystemExit(f"fusion.operating_points: error: {e}")
