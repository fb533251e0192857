"""Static sensor configurations of trained detectors on the demo world: NDS, mAP, GFLOPs and ms per frame,
overall and per condition.

    python bench/static_configs.py [--ckpt runs/demo/checkpoints/last.ckpt ... | --seeds 0 1 2] [--train] [--reuse]
                                   [--dataroot data/synth-demo]

The detector is trained once with random sensor dropout (configs/demo.yaml: `train_sensor_dropout`), so the same
weights are evaluated under every static configuration: each row is what a fixed choice of sensors and resolutions
gets and costs, which is the menu the gate chooses from. --train (re)trains it first with configs/demo.yaml.

With several checkpoints (e.g. the demo trained with different seeds: --seeds trains configs/demo.yaml with each
seed where its run is missing, seed 0 into runs/demo, seed S into runs/demo-seedS) every configuration is evaluated
for each (into --out/<run name>/<configuration>), and the tables are of the mean over the checkpoints, followed by
the spread (max - min) of each cell and each checkpoint's own choice per condition: the seed alone moves
full-fusion NDS by ~0.03 here, so a conclusion drawn from one run should hold for the others. --reuse takes a
metrics.json already in an output folder instead of evaluating again when it was written for the same checkpoint
file (SHA-256), sensors, dataroot, version, split and --limit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (CONFIGS, add_eval_flags, evaluation, run, run_dirs, separator, train_run,  # noqa: E402
                          write_markdown)

# The static table's rows (--only picks among all of CONFIGS)
TABLE = tuple(CONFIGS)[:11]
# What each sensor adds: all high against all high without it.
LEAVE_ONE_OUT = {"camera": "lidar+radar", "lidar": "camera+radar", "radar": "camera+lidar"}
CONDITIONS = ("day", "dusk", "night", "clear", "rain", "fog", "fault")
NAME_WIDTH = max(len(n) for n in TABLE)
HEADER = (f"| {'configuration':<{NAME_WIDTH}} | NDS   | mAP   | GFLOPs | ms/frame | "
          + " | ".join(f"{c:<5}" for c in CONDITIONS) + " |")  # the static table's header row (format_table)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", default=["runs/demo/checkpoints/last.ckpt"],
                   help="one checkpoint, or several (the tables are then of their mean)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="instead of --ckpt: configs/demo.yaml trained with each seed (0: runs/demo, S: "
                        "runs/demo-seedS); missing runs are trained first")
    p.add_argument("--train", action="store_true", help="train configs/demo.yaml first (with --seeds: every seed)")
    p.add_argument("--only", nargs="*", default=None, help="names of CONFIGS to run")
    add_eval_flags(p, out="runs/static_configs", num_workers=2)
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(CONFIGS))
    if unknown:
        p.error(f"--only: unknown configurations {unknown}; known: {sorted(CONFIGS)}")
    if args.seeds is None and args.train and len(args.ckpt) > 1:
        p.error("--train trains one checkpoint (configs/demo.yaml); give one --ckpt")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.seeds is not None:
        args.ckpt = [str(seed_run(s, args.dataroot, args.train)) for s in args.seeds]
    elif args.train or (len(args.ckpt) == 1 and not Path(args.ckpt[0]).exists()):
        train_run(["fit", "--config", "configs/demo.yaml", "--data.dataroot", args.dataroot])
    missing = [c for c in args.ckpt if not Path(c).is_file()]
    if missing:
        raise SystemExit(f"static_configs.py: --ckpt: no such file: {', '.join(missing)}")
    out_dirs = run_dirs(args.ckpt, Path(args.out))
    runs = {}
    for ckpt, out in zip(args.ckpt, out_dirs):
        runs[out.name if len(args.ckpt) > 1 else ckpt] = {
            name: run(evaluation(args, ckpt, out / name.replace(" ", "_").replace("+", "_"), sensors=CONFIGS[name]),
                      args.reuse)
            for name in args.only or TABLE}
    print()
    print(report(runs))
    write_markdown(args.markdown, main_table(runs))
    return runs


def seed_config(seed: int) -> tuple[str, dict]:
    """(run folder, config): configs/demo.yaml with seed_everything `seed` and its run folder
    (trainer.default_root_dir, which moves everything the run writes) runs/demo (seed 0, what `make demo` trains)
    or runs/demo-seed<seed>."""
    import yaml

    root = "runs/demo" if seed == 0 else f"runs/demo-seed{seed}"
    cfg = yaml.safe_load(Path("configs/demo.yaml").read_text())
    cfg["seed_everything"] = seed
    cfg["trainer"]["default_root_dir"] = root
    return root, cfg


def seed_run(seed: int, dataroot: str, force: bool = False) -> Path:
    """last.ckpt of seed_config(seed)'s run, trained here first when it is missing or `force`."""
    import yaml

    root, cfg = seed_config(seed)
    ckpt = Path(root) / "checkpoints" / "last.ckpt"
    if force or not ckpt.is_file():
        Path(root).mkdir(parents=True, exist_ok=True)
        config = Path(root) / f"demo-seed{seed}.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        train_run(["fit", "--config", str(config), "--data.dataroot", dataroot])
    return ckpt


def main_table(runs: dict[str, dict]) -> str:
    """The static table (format_table) of one run, or of the mean of several."""
    if len(runs) == 1:
        return format_table(next(iter(runs.values())))
    return format_table(mean_rows(list(runs.values())), f"mean of {len(runs)} checkpoints ({', '.join(runs)})")


def report(runs: dict[str, dict]) -> str:
    """The tables of one run, or of the mean of several followed by the spread and each run's choices."""
    if len(runs) == 1:
        rows = next(iter(runs.values()))
        parts = [format_table(rows), format_choices(rows)]
    else:
        rows = mean_rows(list(runs.values()))
        parts = [format_table(rows, f"mean of {len(runs)} checkpoints ({', '.join(runs)})"),
                 format_spread(runs), format_choices(rows), format_run_choices(runs)]
    if all(n in rows for n in ("all high", *LEAVE_ONE_OUT.values())):
        parts.append(format_contributions(rows))
    return "\n\n".join(parts)


def mean_rows(runs: list[dict]) -> dict:
    """Per configuration (those in every run), the mean over runs of NDS, mAP, GFLOPs, latency and per-condition
    NDS, in the layout of eval.py's metrics (only those fields)."""
    names = [n for n in runs[0] if all(n in r for r in runs)]

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    rows = {}
    for n in names:
        ms = [r[n] for r in runs]
        conds = [c for c in CONDITIONS if all(m["per_condition"].get(c) for m in ms)]
        rows[n] = {"nds": mean(m["nds"] for m in ms), "map": mean(m["map"] for m in ms),
                   "gflops_per_frame": mean(m["gflops_per_frame"] for m in ms),
                   "latency_ms": {"mean": mean(m["latency_ms"]["mean"] for m in ms)},
                   "per_condition": {c: {"nds": mean(m["per_condition"][c]["nds"] for m in ms)} for c in conds}}
    return rows


def format_table(rows: dict, title: str = "") -> str:
    sep = separator(HEADER)
    lines = ["NDS overall and per condition (synth_val); GFLOPs counted by torch's FLOP counter; ms on this machine"
             + (f"; {title}" if title else ""), HEADER, sep]
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


def format_spread(runs: dict[str, dict]) -> str:
    """Max - min over the runs of NDS and mAP, overall and per condition, per configuration."""
    names = [n for n in CONFIGS if all(n in r for r in runs.values())]
    head = f"| {'configuration':<{NAME_WIDTH}} | NDS   | mAP   | " + " | ".join(f"{c:<5}" for c in CONDITIONS) + " |"
    sep = separator(head)
    lines = [f"Spread: max - min over the {len(runs)} checkpoints", head, sep]
    for n in names:
        ms = [r[n] for r in runs.values()]
        cells = [max(v) - min(v) for v in ([m["nds"] for m in ms], [m["map"] for m in ms])]
        for c in CONDITIONS:
            v = [condition_nds(m, c) for m in ms]
            cells.append(max(v) - min(v) if min(v) > float("-inf") else None)
        lines.append(f"| {n:<{NAME_WIDTH}} | " + " | ".join("  -  " if x is None else f"{x:.3f}" for x in cells)
                     + " |")
    return "\n".join(lines)


def format_run_choices(runs: dict[str, dict], tolerance: float = 0.05) -> str:
    """The cheapest configuration within `tolerance` of the best, per condition, of each run on its own."""
    width = max(NAME_WIDTH, *(len(r) for r in runs))
    lines = [f"The cheapest within {tolerance:.0%} of the best, per checkpoint",
             "| condition | " + " | ".join(f"{r:<{width}}" for r in runs) + " |",
             "|-----------|" + "|".join("-" * (width + 2) for _ in runs) + "|"]
    for c in (None, *CONDITIONS):
        if c and not any(c in m["per_condition"] for rows in runs.values() for m in rows.values()):
            continue
        picks = [cheapest_near_best(rows, c, tolerance)[1] for rows in runs.values()]
        lines.append(f"| {c or 'overall':<9} | " + " | ".join(f"{x:<{width}}" for x in picks) + " |")
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
