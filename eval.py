"""Evaluate a gatefusion checkpoint on any nuScenes-format dataroot (fusion/evaluate.py runs it).

    python eval.py --ckpt runs/demo/checkpoints/last.ckpt --dataroot data/synth-demo --version v1.0-synth \
        --split synth_val --out runs/demo/eval [--sensors camera=high,lidar=fine,radar=on]

Writes into --out: results.json (official nuScenes results format), metrics.json (the devkit's NDS, mAP, per-class AP
and TP errors, overall and per condition; the velocity and heading errors beside zero velocity's; GFLOPs, latency,
cost and how often each sensor ran in each mode) and records.jsonl (per frame: what ran, its cost, GFLOPs and ms).

    python eval.py ... --budget 0.5      # the gate chooses per frame, at a mean cost of half the full configuration's

With --budget b (a gated checkpoint), the gate runs at the price and offsets that training stored in the checkpoint
(measured on training frames, never on the split evaluated), so the dataroot needs no training split. --calibrate-on
SPLIT measures them again on a split: the gate's mean error per configuration on --gate-offsets frames, then the
price that makes its mean cost b x full on --calibration-frames frames. --price gives the price, --operating-point an
earlier run's price and offsets.

    python eval.py ... --corruption lidar_beam_reduction --severity 3     # every frame corrupted after loading
    python eval.py --corruption list                                      # the corruptions (sensors/corruptions.py)
    python eval.py --compare OUT1 OUT2 ...                                # metrics of earlier runs side by side
    python eval.py ... --batch-size 8 --precision 16-mixed --measure-frames 200   # a large split on a GPU
    python eval.py ... --version v1.0-test --split test --no-score        # results.json to submit, not scored

Detection runs at --batch-size in --precision; latency and FLOPs are measured at batch size 1 on --measure-frames
frames spread over the split (default: every frame).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from datasets.evaluation import PRECISIONS
from fusion.evaluate import Evaluation, compare, evaluate, format_metrics
from fusion.operating_points import OFFSET_FRAMES


def parse_args(argv=None) -> argparse.Namespace:
    """The flags; --compare and --corruption list need none of the others."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", nargs="+", metavar="OUT", default=None,
                   help="print the metrics of earlier eval.py output folders side by side, and exit")
    p.add_argument("--ckpt", help="Lightning checkpoint written by train.py (required)")
    p.add_argument("--dataroot", help="nuScenes-format dataroot, real or synthetic (required)")
    p.add_argument("--version", default="v1.0-synth", help="e.g. v1.0-mini, v1.0-trainval, v1.0-synth")
    p.add_argument("--split", default="synth_val", help="official (mini_val, val) or custom from splits.json")
    p.add_argument("--out", help="output folder (required)")
    p.add_argument("--sensors", default=None, help="static sensor configuration, e.g. camera=low,lidar=off,radar=on "
                                                   "(default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=1, help="frames per forward of detection (the throughput; "
                                                             "latency is measured at batch size 1)")
    p.add_argument("--num-workers", type=int, default=2, help="data loading processes of detection")
    p.add_argument("--precision", default="32", choices=list(PRECISIONS),
                   help="detection's precision: the mixed ones run under torch.autocast, on CUDA only")
    p.add_argument("--measure-frames", type=int, default=None, metavar="N",
                   help="measure latency and count FLOPs at batch size 1 on N frames evenly spread over the split "
                        "(default: every frame; 0: none)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar with frames/s (default: when stderr is a terminal)")
    p.add_argument("--score", action=argparse.BooleanOptionalAction, default=True,
                   help="score with the devkit; --no-score writes results.json (a submission, e.g. for v1.0-test "
                        "whose annotations are withheld) and metrics.json without the metrics needing ground truth")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames of the split")
    p.add_argument("--budget", type=float, default=None, help="the gate chooses per frame at this mean cost, a "
                                                                  "fraction of the full configuration's (gated "
                                                                  "checkpoints); default: the static configuration")
    p.add_argument("--calibrate-on", default=None, metavar="SPLIT",
                   help="with --budget: measure the gate's offsets and price on this split instead of using the "
                        "operating points stored in the checkpoint (a checkpoint without them: its training split)")
    p.add_argument("--calibration-frames", type=int, default=200,
                   help="frames of the calibration split the budget's price is calibrated on")
    p.add_argument("--price", type=float, default=None,
                   help="with --budget: run at this price (metrics.json's 'price' of an earlier run at the same "
                        "budget) instead of calibrating one, so that runs on corrupted frames keep the clean "
                        "operating point")
    p.add_argument("--gate-offsets", type=int, default=None,
                   help="with --budget: first measure the gate's mean error per configuration (measured minus "
                        "predicted detection loss) on this many frames of the calibration split with every sensor, "
                        "running all 17 configurations on each, and remove it before the price is calibrated "
                        f"(default {OFFSET_FRAMES}; 0: not)")
    p.add_argument("--operating-point", default=None,
                   help="with --budget: the metrics.json of an earlier run of this checkpoint at this budget; its "
                        "price and gate offsets are used instead of calibrating and measuring them (bench/"
                        "robustness.py keeps the clean run's under every corruption)")
    p.add_argument("--budget-control", type=float, default=0.0,
                   help="steer the price as frames stream so that the running mean cost stays at the budget: the "
                        "gain per unit of cost overshoot (0: the calibrated price alone)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--cache-dir", default=None, help="where the dataset index cache goes")
    p.add_argument("--corruption", default=None, help="corrupt every frame (sensors/corruptions.py); 'list' prints "
                                                      "the names and exits")
    p.add_argument("--severity", type=int, default=None, help="severity 1-5 of --corruption (none for the faults)")
    p.add_argument("--per-condition", action=argparse.BooleanOptionalAction, default=True,
                   help="also score each condition subset (day, night, fog, ...; about 1 s each on the demo world)")
    p.add_argument("--doppler-velocity", action=argparse.BooleanOptionalAction, default=None,
                   help="decode with (or without) the radar's radial velocity resolved along each box's heading "
                        "(fusion/head.py), whatever the checkpoint was trained with; decoding only")
    args = p.parse_args(argv)
    if args.compare is None and args.corruption != "list":
        missing = [f"--{name}" for name in ("ckpt", "dataroot", "out") if getattr(args, name) is None]
        if missing:
            p.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def main(argv=None) -> dict:
    """Run what the flags say; the metrics of an evaluation ({} for --compare and --corruption list)."""
    args = parse_args(argv)
    if args.corruption == "list":
        from sensors.corruptions import describe
        print(describe())
        return {}
    if args.compare is not None:
        print(compare(args.compare))
        return {}
    fields = {f.name for f in dataclasses.fields(Evaluation)}
    metrics = evaluate(Evaluation(**{k: v for k, v in vars(args).items() if k in fields}))
    print(format_metrics(metrics))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        sys.exit(f"eval.py: error: {e}")
