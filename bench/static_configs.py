"""Static sensor configurations of one trained detector on the demo world: NDS, mAP, GFLOPs and ms per frame,
overall and per condition.

    python bench/static_configs.py [--ckpt runs/demo/checkpoints/last.ckpt] [--train] [--dataroot data/synth-demo]

The detector is trained once with random sensor dropout (configs/demo.yaml: `train_sensor_dropout`), so the same
weights are evaluated under every static configuration: each row is what a fixed choice of sensors and resolutions
gets and costs, which is the menu the gate chooses from. --train (re)trains it first with configs/demo.yaml.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = {
    "camera low": "camera=low,lidar=off,radar=off",
    "camera high": "camera=high,lidar=off,radar=off",
    "lidar coarse": "camera=off,lidar=coarse,radar=off",
    "lidar fine": "camera=off,lidar=fine,radar=off",
    "radar": "camera=off,lidar=off,radar=on",
    "camera+lidar": "camera=high,lidar=fine,radar=off",
    "camera+radar": "camera=high,lidar=off,radar=on",
    "lidar+radar": "camera=off,lidar=fine,radar=on",
    "lidar coarse+radar": "camera=off,lidar=coarse,radar=on",
    "all low": "camera=low,lidar=coarse,radar=on",
    "all high": "camera=high,lidar=fine,radar=on",
}
# What each sensor adds: all high against all high without it.
LEAVE_ONE_OUT = {"camera": "lidar+radar", "lidar": "camera+radar", "radar": "camera+lidar"}
CONDITIONS = ("day", "dusk", "night", "clear", "rain", "fog", "fault")
NAME_WIDTH = max(len(n) for n in CONFIGS)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default="runs/demo/checkpoints/last.ckpt")
    p.add_argument("--train", action="store_true", help="train configs/demo.yaml first")
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default="synth_val")
    p.add_argument("--out", default="runs/static_configs")
    p.add_argument("--limit", type=int, default=None, help="only the first N frames of the split")
    p.add_argument("--only", nargs="*", default=None, help="names of CONFIGS to run")
    args = p.parse_args(argv)

    import eval as evaluate
    if args.train or not Path(args.ckpt).exists():
        import train
        train.main(["fit", "--config", "configs/demo.yaml", "--data.dataroot", args.dataroot])
    rows = {}
    for name, sensors in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        cmd = ["--ckpt", args.ckpt, "--dataroot", args.dataroot, "--version", args.version, "--split", args.split,
               "--out", str(Path(args.out) / name.replace(" ", "_").replace("+", "_")), "--sensors", sensors]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        rows[name] = evaluate.main(cmd)
    print()
    print(format_table(rows))
    print()
    print(format_choices(rows))
    if all(n in rows for n in ("all high", *LEAVE_ONE_OUT.values())):
        print()
        print(format_contributions(rows))
    return rows


def format_table(rows: dict) -> str:
    head = (f"| {'configuration':<{NAME_WIDTH}} | NDS   | mAP   | GFLOPs | ms/frame | "
            + " | ".join(f"{c:<5}" for c in CONDITIONS) + " |")
    sep = "|" + "|".join("-" * len(c) for c in head[1:-1].split("|")) + "|"
    lines = ["NDS overall and per condition (synth_val); GFLOPs counted by torch's FLOP counter; ms on this machine",
             head, sep]
    for name, m in rows.items():
        cond = []
        for c in CONDITIONS:
            s = m["per_condition"].get(c)
            cond.append(f"{s['nds']:.3f}" if s else "  -  ")
        lines.append(f"| {name:<{NAME_WIDTH}} | {m['nds']:.3f} | {m['map']:.3f} | {m['gflops_per_frame']:6.2f} | "
                     f"{m['latency_ms']['mean']:8.1f} | " + " | ".join(cond) + " |")
    return "\n".join(lines)


def condition_nds(metrics: dict, condition: str | None) -> float:
    """NDS of one configuration on `condition` (None: overall); -inf where the condition has no frames."""
    s = metrics["per_condition"].get(condition) if condition else metrics
    return s["nds"] if s else float("-inf")


def cheapest_near_best(rows: dict, condition: str | None, tolerance: float = 0.05) -> tuple[str, str]:
    """(best, cheapest): the configuration with the highest NDS on `condition` (None: overall) and the one with
    the fewest GFLOPs whose NDS is within `tolerance` (relative) of that best: what a gate should pick there."""
    nds = {n: condition_nds(m, condition) for n, m in rows.items()}
    best = max(nds, key=nds.get)
    near = [n for n in rows if nds[n] >= (1 - tolerance) * nds[best]]
    return best, min(near, key=lambda n: (rows[n]["gflops_per_frame"], -nds[n]))


def format_choices(rows: dict, tolerance: float = 0.05) -> str:
    lines = [f"Per condition: the best configuration and the cheapest one within {tolerance:.0%} of its NDS",
             f"| condition | {'best':<{NAME_WIDTH}} | NDS   | {'cheapest near best':<{NAME_WIDTH}} | NDS   | GFLOPs |",
             f"|-----------|{'-' * (NAME_WIDTH + 2)}|-------|{'-' * (NAME_WIDTH + 2)}|-------|--------|"]
    for c in (None, *CONDITIONS):
        if c and not any(c in m["per_condition"] for m in rows.values()):
            continue
        best, cheap = cheapest_near_best(rows, c, tolerance)
        lines.append(f"| {c or 'overall':<9} | {best:<{NAME_WIDTH}} | {condition_nds(rows[best], c):.3f} | "
                     f"{cheap:<{NAME_WIDTH}} | "
                     f"{condition_nds(rows[cheap], c):.3f} | {rows[cheap]['gflops_per_frame']:6.2f} |")
    return "\n".join(lines)


def format_contributions(rows: dict) -> str:
    """NDS of all high minus NDS of all high without one sensor, overall and per condition."""
    lines = ["What each sensor adds: NDS of all high minus NDS of all high without it",
             "| sensor | overall | " + " | ".join(f"{c:<6}" for c in CONDITIONS) + " |",
             "|--------|---------|" + "|".join("-" * 8 for _ in CONDITIONS) + "|"]
    full = rows["all high"]
    for sensor, without in LEAVE_ONE_OUT.items():
        cells = []
        for c in (None, *CONDITIONS):
            a, b = condition_nds(full, c), condition_nds(rows[without], c)
            cells.append(f"{a - b:+.3f}" if a > float("-inf") and b > float("-inf") else "   -  ")
        lines.append(f"| {sensor:<6} | {cells[0]:>7} | " + " | ".join(f"{x:>6}" for x in cells[1:]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
