"""What the benches share: their data and evaluation flags (defined here once), the static configurations they
name, where each evaluation's folder goes, reusing an evaluation already written, writing a markdown table, and the
static frontier (the upper hull of static configurations in cost and NDS) a gate is measured against. Not a bench
itself: it has no command line."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fusion.checkpoint import file_sha256
from fusion.evaluate import Evaluation, evaluate, format_metrics

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
    # the rest of the 17 the gate chooses among (bench/pareto.py evaluates them all; the static table does not)
    "camera low+radar": "camera=low,lidar=off,radar=on",
    "camera low+lidar coarse": "camera=low,lidar=coarse,radar=off",
    "camera low+lidar fine": "camera=low,lidar=fine,radar=off",
    "camera low+lidar+radar": "camera=low,lidar=fine,radar=on",
    "camera+lidar coarse": "camera=high,lidar=coarse,radar=off",
    "camera+lidar coarse+radar": "camera=high,lidar=coarse,radar=on",
}


def train_run(argv: list[str]) -> None:
    """Train a run as `python train.py ARGV` does, in its own process (entry points do not import each other)."""
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "train.py"), *argv], check=True)


def add_data_flags(p: argparse.ArgumentParser, split: str | None = "synth_val") -> None:
    """--dataroot, --version, --split (none when `split` is None): the nuScenes-format data a bench reads."""
    p.add_argument("--dataroot", default="data/synth-demo", help="nuScenes-format dataroot (real or synthetic)")
    p.add_argument("--version", default="v1.0-synth", help="e.g. v1.0-mini, v1.0-trainval, v1.0-synth")
    if split is not None:
        p.add_argument("--split", default=split, help="official (mini_val, val) or custom from splits.json")


def add_eval_flags(p: argparse.ArgumentParser, out: str, num_workers: int = 1) -> None:
    """The data flags, and how a bench's evaluations run (fusion/evaluate.py) and where they go: --out, --limit,
    --num-workers, --cache-dir, --device, --reuse, --markdown."""
    add_data_flags(p)
    p.add_argument("--out", default=out, help="output folder: one sub-folder per evaluation")
    p.add_argument("--limit", type=int, default=None, help="only the first N frames of the split")
    p.add_argument("--num-workers", type=int, default=num_workers, help="DataLoader workers of each evaluation")
    p.add_argument("--cache-dir", default=None, help="where the dataset index cache goes")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--reuse", action="store_true", help="reuse an evaluation folder whose metrics.json was written "
                                                        "for the same checkpoint file (SHA-256), choice, data, "
                                                        "--limit and corruption")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write the bench's table to this file")


def evaluation(args: argparse.Namespace, ckpt, out, **choice) -> Evaluation:
    """The Evaluation of checkpoint `ckpt` into folder `out` on the bench's data and evaluation flags; `choice`
    sets the other fields (sensors or budget, corruption, measure_frames, ...)."""
    return Evaluation(ckpt=str(ckpt), dataroot=args.dataroot, out=str(out), version=args.version, split=args.split,
                      limit=args.limit, num_workers=args.num_workers, cache_dir=args.cache_dir, device=args.device,
                      **choice)


def run(ev: Evaluation, reuse: bool = False) -> dict:
    """The metrics of `ev`: those already in ev.out when `reuse` and reusable(ev), else evaluated now (printed)."""
    old = reusable(ev) if reuse else None
    if old is not None:
        return old
    metrics = evaluate(ev)
    print(format_metrics(metrics))
    return metrics


def reusable(ev: Evaluation) -> dict | None:
    """The metrics.json in ev.out when its evaluation wrote it (beside results.json and records.jsonl) for the same
    checkpoint file, choice (static sensors, or the gate at a budget with its price steering, measured with gate
    offsets), data (dataroot, version, split, limit) and corruption; else None."""
    from fusion.detector import SensorConfig

    out = Path(ev.out)
    if not all((out / f).is_file() for f in ("metrics.json", "results.json", "records.jsonl")):
        return None
    m = json.loads((out / "metrics.json").read_text())
    want = SensorConfig.parse(ev.sensors) if ev.sensors is not None else None
    same = (m.get("checkpoint_sha256") == file_sha256(ev.ckpt)
            and m.get("sensors") == ({"camera": want.camera, "lidar": want.lidar, "radar": want.radar} if want
                                     else "gate")
            and m.get("budget") == ev.budget and m.get("budget_control", 0.0) == ev.budget_control
            and m.get("corruption") == ev.corruption and m.get("severity") == ev.severity
            and m.get("dataroot") == ev.dataroot and m.get("version") == ev.version
            and m.get("split") == ev.split and m.get("limit") == ev.limit
            and (ev.budget is None or m.get("gate_offsets") is not None))
    if same:
        print(f"reusing {out / 'metrics.json'}")
    return m if same else None


def run_dirs(ckpts: list[str], out: Path) -> list[Path]:
    """Output folder per checkpoint: `out` itself for one; else out/<run name>, the run name being the folder
    above checkpoints/ (runs/demo-seed1/checkpoints/last.ckpt -> demo-seed1), numbered where names repeat."""
    if len(ckpts) == 1:
        return [out]
    names = []
    for c in ckpts:
        path = Path(c).resolve()
        name = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        names.append(name if name not in names else f"{name}-{len(names)}")
    return [out / n for n in names]


def config_folder(config: str) -> str:
    """Folder name of a static configuration: camera=high,lidar=fine,radar=on -> camera-high_lidar-fine_radar-on."""
    return config.replace(",", "_").replace("=", "-")


def budget_folder(budget: float, control: float = 0.0) -> str:
    """Folder name of the gate at a budget (and a price steering gain, Evaluation.budget_control): budget-0.5,
    budget-0.5-control-1.0."""
    return f"budget-{budget}" + (f"-control-{control}" if control else "")


def separator(header: str) -> str:
    """The markdown separator row under a header row "| a | b |", each cell as wide as the header's."""
    return "|" + "|".join("-" * len(c) for c in header[1:-1].split("|")) + "|"


def markdown_table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    """A markdown table: the header row, its separator, one row per tuple (cells already formatted)."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows)]


def write_markdown(path: str | Path | None, text: str) -> None:
    """Write a bench's markdown table to `path` (nothing when None)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
        print(f"wrote {path}")


def upper_hull(points: dict[str, tuple[float, float]]) -> list[tuple[float, float, str]]:
    """The static frontier: of named (cost, NDS) points, the upper concave hull from the cheapest point up to the
    best NDS, as (cost, NDS, name) vertices by rising cost. Between two vertices it is the NDS that running the one
    on some frames and the other on the rest reaches at each mean cost (for frames alike, the mix's NDS is the mix
    of the two NDS); past the best it is flat (a budget need not be spent)."""
    best_at: dict[float, tuple[float, str]] = {}
    for name, (cost, nds) in points.items():  # at one cost only the best point counts
        if cost not in best_at or nds > best_at[cost][0]:
            best_at[cost] = (nds, name)
    hull: list[tuple[float, float, str]] = []
    for cost in sorted(best_at):
        p = (cost, *best_at[cost])
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1]) -
                                  (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= -1e-12:
            hull.pop()  # hull[-1] lies on or below the chord from hull[-2] to p
        hull.append(p)
    top = max(range(len(hull)), key=lambda i: hull[i][1]) if hull else -1
    return hull[:top + 1]


def frontier_at(hull: list[tuple[float, float, str]], cost: float) -> tuple[float, str]:
    """(the frontier's NDS at mean cost `cost`, what it mixes: "A" or "A + B"); NaN below the cheapest point."""
    if not hull or cost < hull[0][0] - 1e-9:
        return float("nan"), "nothing costs as little"
    for (c0, n0, a), (c1, n1, b) in zip(hull, hull[1:]):
        if cost <= c1:
            w = (cost - c0) / (c1 - c0)
            return n0 + w * (n1 - n0), (a if w <= 1e-9 else b if w >= 1 - 1e-9 else f"{a} + {b}")
    return hull[-1][1], hull[-1][2]


def frontier_margins(gated: dict[float, dict], statics: dict[str, dict]) -> dict[float, dict]:
    """One seed's gate against the static frontier of the same model's static configurations: per budget, the
    frontier's NDS at the gate's mean cost, what it mixes there and the gate's margin over it."""
    hull = upper_hull({name: (r["cost"], r["nds"]) for name, r in statics.items()})
    out = {}
    for b, g in gated.items():
        nds, mix = frontier_at(hull, g["cost"])
        out[b] = {"frontier_nds": nds, "mix": mix, "margin": g["nds"] - nds}
    return out
