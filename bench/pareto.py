"""NDS against cost on the demo world: the gated model at several budgets, every static configuration (of the gated
model with its gate overridden, and of the static recipe), and the per-frame oracle; three seeds, mean and spread.

    python bench/pareto.py [--seeds 0 1 2] [--budgets 0.35 0.5 0.65 0.8] [--train] [--reuse] [--limit N]
                           [--dataroot data/synth-demo] [--out runs/pareto]
    python bench/pareto.py --compare A/pareto.json B/pareto.json   # gate recipes side by side

Runs per seed S: the gated model runs/demo-gated (S = 0) or runs/demo-gated-seedS (configs/demo.yaml + gate.yaml), and
the static recipe runs/demo or runs/demo-seedS (configs/demo.yaml, as bench/static_configs.py names them); --train
trains what is missing. Every evaluation is fusion/evaluate.py's, into
--out/<run>/<budget-B[-control-G] | configuration>; --reuse takes a folder whose metrics.json was written for the
same checkpoint file (SHA-256), choice, data and --limit. The gate runs as eval.py --budget runs it (its offsets
measured and its price calibrated on training frames; --budget-control G also steers the price as the frames
stream). The oracle (bench/oracle.py) picks per frame among the gated model's static configurations, with the
ground truth.

Prints: the table (NDS, mAP, cost as a fraction of full by the latency table, GFLOPs counted per frame, ms per frame
at batch size 1 as each evaluation measured it; mean over seeds and spread = max - min), for each budget the static
configurations that cost no more and by how much the gate beats them; the gate against the static frontier (the upper
hull of the static configurations' cost and NDS, per seed on the same model) and its margin at each budget; the ms of
every configuration, the gate at each budget and the oracle timed interleaved in one process over the same frames
(--timing-frames), whose ratios compare where separately timed evaluations' do not; and what the gate and the oracle
choose per condition. Writes --out/NAME.png (NDS against GFLOPs and against the evaluations' ms, with the static
frontier) and --out/NAME.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (CONFIGS, add_eval_flags, budget_folder, config_folder, evaluation,  # noqa: E402
                          frontier_margins, run, separator, train_run, upper_hull, write_markdown)
from bench.frame_oracle import oracle_from_dirs  # noqa: E402
from fusion.evaluate import operating_point, resolve_device  # noqa: E402

BUDGETS = (0.35, 0.5, 0.65, 0.8)
GROUPS = ("day", "dusk", "night", "clear", "rain", "fog", "fault", "empty", "dense")


def run_root(base: str, seed: int) -> Path:
    """The run of one seed: `base` itself for seed 0 (runs/demo-gated, runs/demo: what make demo and
    bench/static_configs.py train), `base`-seedS for seed S."""
    return Path(base if seed == 0 else f"{base}-seed{seed}")


def ensure_trained(kind: str, base: str, seed: int, dataroot: str, train: bool) -> Path:
    """last.ckpt of the run, trained first when missing and `train`."""
    root = run_root(base, seed)
    ckpt = root / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        if not train:
            raise SystemExit(f"pareto.py: {ckpt} is missing; train it (--train) or run make demo")
        configs = ["--config", "configs/demo.yaml"] + (["--config", "configs/gate.yaml"] if kind == "gated" else [])
        train_run(["fit", *configs, "--seed_everything", str(seed), "--trainer.default_root_dir",
                       str(root), "--data.dataroot", dataroot])
    return ckpt


def evaluate(ckpt: Path, folder: Path, choice: dict, args) -> dict:
    """The metrics of one checkpoint and one choice ({"sensors": S} or {"budget": b}), reusing a folder written for
    the same checkpoint file, choice, data and limit when --reuse. A static configuration's FLOPs and latency hardly
    vary between frames: measured on 8 frames spread over the split; the gate's on every frame."""
    extra = {"sensors": choice["sensors"], "measure_frames": 8} if "sensors" in choice else \
        {"budget": choice["budget"], "budget_control": args.budget_control}
    return run(evaluation(args, ckpt, folder, **extra), args.reuse)


def row(m: dict) -> dict:
    """The numbers of one evaluation that the tables use."""
    sel = m["selection"]["all"]
    return {"nds": m["nds"], "map": m["map"], "cost": sel["cost"]["mean"], "cost_p95": sel["cost"]["p95"],
            "gflops": sel["gflops"]["mean"], "ms": sel["latency_ms"]["mean"],
            "per_condition": {g: m["per_condition"].get(g, {}).get("nds") for g in GROUPS},
            "selection": {g: s["selection"] for g, s in m["selection"].items()}}


def aggregate(rows: list[dict], keys=("nds", "map", "cost", "cost_p95", "gflops", "ms")) -> dict:
    """Mean and spread (max - min) over seeds of every scalar of row() (or of `keys`)."""
    out = {}
    for key in keys:
        values = [r[key] for r in rows]
        out[key], out[key + "_spread"] = float(np.mean(values)), float(np.max(values) - np.min(values))
    return out


def beats(gated: dict, statics: dict[str, dict]) -> list[tuple[str, float, float]]:
    """For a gated row, every static row that costs no more (mean cost): (name, NDS margin, the larger spread)."""
    return sorted(((name, gated["nds"] - s["nds"], max(gated["nds_spread"], s["nds_spread"]))
                   for name, s in statics.items() if s["cost"] <= gated["cost"] + 1e-9), key=lambda x: x[1])


def selection_table(title: str, selections: dict[str, dict]) -> list[str]:
    """Share of frames per sensor mode, per condition group: selections = name -> group -> sensor -> mode -> share."""
    cols = ["camera off", "camera low", "camera high", "lidar off", "lidar coarse", "lidar fine", "radar on"]
    lines = [title, "| who    | frames   | " + " | ".join(cols) + " |",
             "|--------|----------|" + "|".join("-" * (len(c) + 2) for c in cols) + "|"]
    for name, per_group in selections.items():
        for g in ("all", *GROUPS):
            if g not in per_group:
                continue
            sel = per_group[g]
            cells = [f"{sel[c.split()[0]][c.split()[1]]:>{len(c)}.0%}" for c in cols]
            lines.append(f"| {name:<6} | {g:<8} | " + " | ".join(cells) + " |")
    return lines


def mean_selection(selections: list[dict]) -> dict:
    """Mean over seeds of group -> sensor -> mode -> share (groups present in every seed)."""
    groups = [g for g in selections[0] if all(g in s for s in selections)]
    return {g: {s: {m: float(np.mean([x[g][s][m] for x in selections])) for m in selections[0][g][s]}
                for s in selections[0][g]} for g in groups}


def oracle_selection(metrics: dict) -> dict:
    """bench/oracle.py's per-group selection in the layout of eval.py's."""
    return {("all" if g == "overall" else g): p["selection"] for g, p in metrics["per_group"].items()}


def plot(path: Path, table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], "gflops", "GFLOPs per frame (counted)"),
                           (axes[1], "ms", "ms per frame (measured, batch size 1, CPU)")):
        for kind, marker, color in (("static (gated model, gate overridden)", "o", "#636363"),
                                    ("static (static recipe)", "s", "#bdbdbd")):
            rows = table[kind]
            ax.errorbar([r[key] for r in rows.values()], [r["nds"] for r in rows.values()],
                        yerr=[r["nds_spread"] / 2 for r in rows.values()], fmt=marker, color=color, ms=5,
                        capsize=2, label=kind)
            if kind.startswith("static (gated"):
                for name, r in rows.items():
                    ax.annotate(name, (r[key], r["nds"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
                hull = upper_hull({name: (r[key], r["nds"]) for name, r in rows.items()})
                ax.plot([h[0] for h in hull], [h[1] for h in hull], "--", color="#636363", lw=1,
                        label="static frontier (two configurations mixed per frame)")
        gated = table["gated"]
        xs = [gated[b][key] for b in sorted(gated)]
        ax.errorbar(xs, [gated[b]["nds"] for b in sorted(gated)],
                    yerr=[gated[b]["nds_spread"] / 2 for b in sorted(gated)],
                    fmt="-D", color="#e6550d", ms=6, capsize=2, label="gated (budgets)")
        for b in sorted(gated):
            ax.annotate(f"b={b}", (gated[b][key], gated[b]["nds"]), fontsize=7, color="#e6550d", xytext=(3, -10),
                        textcoords="offset points")
        o = table["oracle"]
        if o:
            ax.errorbar([o[key]], [o["nds"]], yerr=[o["nds_spread"] / 2], fmt="*", color="#3182bd", ms=12,
                        label="oracle (ground truth per frame)")
        ax.set_xlabel(label)
        ax.set_ylabel("NDS (synth_val, mean of seeds; bars: spread)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- the static frontier

FRONTIER_HEADER = ("| budget | gate NDS     | cost  | frontier NDS | frontier mixes                           "
                   "| margin         | verdict                    |")


def frontier_table(table: dict, margins: dict[float, list[dict]]) -> list[str]:
    """The gate against the static frontier at each budget (mean of seeds, ± half the spread), the verdict
    "above"/"below" only where the margin exceeds the larger of the gate's and the frontier's seed spreads (none
    from one seed)."""
    lines = [FRONTIER_HEADER, separator(FRONTIER_HEADER)]
    for b in sorted(margins):
        g, per_seed = table["gated"][b], margins[b]
        fr = np.array([m["frontier_nds"] for m in per_seed])
        mg = np.array([m["margin"] for m in per_seed])
        spread = max(g["nds_spread"], float(np.ptp(fr)) if len(fr) else 0.0)
        verdict = ("no static point costs as little" if np.isnan(mg).any() else
                   "one seed: no spread to judge" if len(mg) < 2 else
                   "within the seed spread" if abs(mg.mean()) <= spread else
                   "above" if mg.mean() > 0 else "below")
        mixes = sorted({m["mix"] for m in per_seed})
        lines.append(f"| {b:<6} | {g['nds']:.3f} ± {g['nds_spread'] / 2:.3f} | {g['cost']:.3f} | "
                     f"{fr.mean():.3f} ± {np.ptp(fr) / 2:.3f} | {'; '.join(mixes):<40} | "
                     f"{mg.mean():+.3f} ± {np.ptp(mg) / 2:.3f} | {verdict:<26} |")
    return lines


# ------------------------------------------------------------------------------- ms timed interleaved

def interleaved_ms(ckpt: Path, choices: dict[str, dict], args) -> dict[str, float]:
    """Mean ms per frame at batch size 1 of each choice ({"sensors": S}, or {"budget": b, "price": p, "offsets":
    (K,)} for the gate), all timed in this one process on the same --timing-frames frames evenly spread over the
    split: each frame runs every choice in turn, the order rotated from frame to frame, after one untimed run of
    every choice. Load on the machine then falls on all choices alike, so their ratios compare; separate
    evaluations, each timed under whatever load there was, do not. The host-to-device copy, the gate and the
    detector are timed, as eval.py times a frame."""
    from datasets.evaluation import spread
    from datasets.nuscenes import NuScenesDataset
    from fusion.checkpoint import load_checkpoint
    from fusion.detector import SensorConfig
    from fusion.operating_points import data_settings
    from sensors.frame import collate

    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model, data_hp = load_checkpoint(ckpt)
    model = model.to(device).eval()
    dataset = NuScenesDataset(args.dataroot, args.version, args.split, **data_settings(data_hp, args.cache_dir))
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    frames = [collate([dataset[i]]) for i in sorted(spread(n, args.timing_frames))]
    runs = [(label, SensorConfig.parse(c["sensors"]) if "sensors" in c else None, c.get("budget"),
             c.get("price", 0.0), c.get("offsets")) for label, c in choices.items()]
    times: dict[str, list[float]] = {label: [] for label in choices}
    with torch.no_grad():
        for f, frame in enumerate(frames):
            shift = f % len(runs)
            for label, sensors, budget, price, offsets in runs[shift:] + runs[:shift]:
                if offsets is not None:
                    model.gate.offset.copy_(torch.as_tensor(offsets))
                if f == 0:  # start-up costs (first use of each branch) are not timed
                    model.detect(frame.to(device), sensors, budget, price)
                sync()
                t0 = time.perf_counter()
                model.detect(frame.to(device), sensors, budget, price)
                sync()
                times[label].append((time.perf_counter() - t0) * 1000.0)
    return {label: float(np.mean(t)) for label, t in times.items()}


INTERLEAVED_HEADER = "| choice                    | ms interleaved | x full |"


def interleaved_table(table: dict, args) -> list[str]:
    """Every timed choice's interleaved ms (mean of seeds ± half the spread) and its ratio to full fusion's."""
    ms = table["interleaved_ms"]
    full = ms["all high"]["ms"]
    lines = [f"ms per frame timed interleaved in one process per seed (round-robin over the same {args.timing_frames} "
             "frames; the static recipe has the same branches, so these hold for its rows too)",
             INTERLEAVED_HEADER, separator(INTERLEAVED_HEADER)]
    for label, r in sorted(ms.items(), key=lambda kv: -kv[1]["ms"]):
        lines.append(f"| {label:<25} | {r['ms']:7.1f} ± {r['ms_spread'] / 2:4.1f} | {ratio(r['ms'], full):6.2f} |")
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS),
                   help="names of bench/common.py CONFIGS evaluated on the gated model (the oracle chooses among "
                        "them)")
    p.add_argument("--static-configs", nargs="+", default=None,
                   help="names evaluated on the static recipe (default: --configs)")
    p.add_argument("--train", action="store_true", help="train the runs that are missing")
    p.add_argument("--no-static-recipe", action="store_true", help="leave out the static recipe's rows")
    p.add_argument("--no-gated", action="store_true", help="only the static recipe's evaluations (no table)")
    p.add_argument("--no-oracle", action="store_true", help="leave out the oracle (it needs --configs to be a menu)")
    p.add_argument("--gated-runs", default="runs/demo-gated", help="the gated runs: this (seed 0), this-seedS")
    p.add_argument("--static-runs", default="runs/demo", help="the static recipe's runs: this (seed 0), this-seedS")
    p.add_argument("--budget-control", type=float, default=0.0,
                   help="also steer the gate's price as the frames stream (the gain; 0: the price calibrated on "
                        "training frames alone)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="the oracle's (bench/oracle.py)")
    p.add_argument("--name", default="pareto", help="the plot and table files: --out/NAME.png, NAME.json")
    p.add_argument("--timing-frames", type=int, default=24,
                   help="frames on which every choice of a seed is timed interleaved in one process (0: not timed)")
    add_eval_flags(p, out="runs/pareto", num_workers=1)
    args = p.parse_args(argv)
    args.static_configs = args.static_configs or args.configs
    unknown = sorted((set(args.configs) | set(args.static_configs)) - set(CONFIGS))
    if unknown or "all high" not in args.configs:
        p.error(f"--configs: unknown {unknown} (known: {sorted(CONFIGS)}); 'all high' (full fusion) is needed")
    return args


def main(argv=None) -> dict:
    if "--compare" in (sys.argv[1:] if argv is None else argv):
        return compare_main(argv)
    args = parse_args(argv)
    started = time.time()
    from nuscenes import NuScenes

    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    out = Path(args.out)
    per_seed: dict[str, dict[str, list]] = {"gated": {}, "static (gated model, gate overridden)": {},
                                            "static (static recipe)": {}, "oracle": {"oracle": []}}
    gate_sel, oracle_sel = {b: [] for b in args.budgets}, []
    margins: dict[float, list[dict]] = {}  # per budget, per seed: frontier_margins
    interleaved: dict[str, list[dict]] = {}  # per timed choice, per seed: {"ms": interleaved_ms}
    kinds = ("gated",) if args.no_static_recipe else ("static",) if args.no_gated else ("gated", "static")
    for seed in args.seeds:
        for kind in kinds:
            base = args.gated_runs if kind == "gated" else args.static_runs
            missing = not (run_root(base, seed) / "checkpoints" / "last.ckpt").is_file()
            if kind == "static" and not args.train and missing:
                print(f"the static recipe's run of seed {seed} ({run_root(base, seed)}) is missing: left out")
                continue
            ckpt = ensure_trained(kind, base, seed, args.dataroot, args.train)
            folder = out / run_root(base, seed).name
            label = "static (gated model, gate overridden)" if kind == "gated" else "static (static recipe)"
            dirs = {}
            for name in args.configs if kind == "gated" else args.static_configs:
                dirs[CONFIGS[name]] = folder / config_folder(CONFIGS[name])
                m = evaluate(ckpt, dirs[CONFIGS[name]], {"sensors": CONFIGS[name]}, args)
                per_seed[label].setdefault(name, []).append(row(m))
            if kind != "gated":
                continue
            gate_prices = {}
            for b in args.budgets:
                bf = folder / budget_folder(b, args.budget_control)
                m = evaluate(ckpt, bf, {"budget": b}, args)
                per_seed["gated"].setdefault(b, []).append(row(m))
                gate_sel[b].append({g: s["selection"] for g, s in m["selection"].items()})
                gate_prices[b] = operating_point(bf / "metrics.json", b, ckpt)
            for b, mg in frontier_margins({b: per_seed["gated"][b][-1] for b in args.budgets},
                                          {n: per_seed[label][n][-1] for n in args.configs}).items():
                margins.setdefault(b, []).append(mg)
            if args.timing_frames:
                names = dict.fromkeys([*args.configs, *args.static_configs])
                timed = interleaved_ms(ckpt, {**{n: {"sensors": CONFIGS[n]} for n in names},
                                              **{f"gate, budget {b}": {"budget": b, "price": p, "offsets": o}
                                                 for b, (p, o) in gate_prices.items()}}, args)
                for name, ms in timed.items():
                    interleaved.setdefault(name, []).append({"ms": ms})
            if args.no_oracle:
                continue
            om = oracle_from_dirs(dirs, nusc, args.split, folder / "oracle", args.score_threshold)
            per_seed["oracle"]["oracle"].append({
                "nds": om["nds"], "map": om["map"], "cost": om["cost_per_frame"]["mean"],
                "cost_p95": om["cost_per_frame"]["p95"], "gflops": om["gflops_per_frame"]["mean"],
                "ms": om["latency_ms"]["mean"]})
            oracle_sel.append(oracle_selection(om))
            if args.timing_frames:  # the oracle's frames at the interleaved ms of the configuration each chose
                by_config = {CONFIGS[n]: timed[n] for n in args.configs}
                shares = om["per_group"]["overall"]["configs"]
                interleaved.setdefault("oracle", []).append({"ms": sum(v * by_config[c] for c, v in shares.items())})
    if args.no_gated:
        return {}
    table = {kind: {name: aggregate(rows) for name, rows in d.items() if rows} for kind, d in per_seed.items()}
    table["oracle"] = table["oracle"].get("oracle")
    table["interleaved_ms"] = {name: aggregate(rows, ("ms",)) for name, rows in interleaved.items()}
    report = format_report(table, args, {b: mean_selection(gate_sel[b]) for b in args.budgets},
                           mean_selection(oracle_sel) if oracle_sel else None, time.time() - started, margins)
    print(report)
    plot(out / f"{args.name}.png", table)
    tables = {k: {str(n): v for n, v in t.items()} if k != "oracle" else t for k, t in table.items()}
    (out / f"{args.name}.json").write_text(json.dumps({"table": tables, "seeds": args.seeds, "budgets": args.budgets,
                                                       "frontier": {str(b): m for b, m in margins.items()},
                                                       "gated_runs": args.gated_runs, "split": args.split,
                                                       "dataroot": args.dataroot},
                                                      indent=2))
    print(f"\nwrote {out / (args.name + '.png')} and {out / (args.name + '.json')}")
    write_markdown(args.markdown, "\n".join(main_table(table, args)))
    return table


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


HEADER = ("| model                    | choice             | NDS          | mAP   | cost  | cost p95 | GFLOPs "
          "| ms    |")


def main_table(table: dict, args) -> list[str]:
    """The table (title, header, a row per gated budget, the oracle and each static configuration, costliest
    first): what --markdown writes."""
    n = len(args.seeds)
    seeds = ", ".join(map(str, args.seeds))
    lines = [f"NDS against cost on {args.split} ({args.dataroot}), mean of {n} seeds ({seeds})"
             f" and spread (max - min); cost: fraction of full by the model's latency table; GFLOPs counted per "
             f"frame; ms measured per frame at batch size 1 on this machine",
             HEADER, separator(HEADER)]

    def add(model: str, choice: str, r: dict) -> None:
        lines.append(f"| {model:<24} | {choice:<18} | {r['nds']:.3f} ± {r['nds_spread'] / 2:.3f} | {r['map']:.3f} | "
                     f"{r['cost']:.3f} | {r['cost_p95']:8.3f} | {r['gflops']:6.2f} | {r['ms']:5.1f} |")

    for b in sorted(table["gated"]):
        add("gated", f"budget {b}", table["gated"][b])
    if table["oracle"]:
        add("oracle", "ground truth", table["oracle"])
    for kind, short in (("static (gated model, gate overridden)", "gated, overridden"),
                        ("static (static recipe)", "static recipe")):
        for name, r in sorted(table.get(kind, {}).items(), key=lambda kv: -kv[1]["cost"]):
            add(short, name, r)
    return lines


def format_report(table: dict, args, gate_selection: dict[float, dict], oracle_selection_: dict,
                  seconds: float, margins: dict[float, list[dict]]) -> str:
    lines = main_table(table, args)
    lines += ["", "the gate against the static frontier (the upper hull of the gated model's static configurations: "
              "the NDS that mixing two of them frame by frame reaches at the gate's mean cost), per seed on the same "
              "model, mean and ± half the spread; a verdict only beyond the larger seed spread"]
    lines += frontier_table(table, margins)
    if table["interleaved_ms"]:
        lines += [""] + interleaved_table(table, args)
    statics = table["static (gated model, gate overridden)"]
    full = statics["all high"]
    lines += ["", "each budget against every static configuration of the same models that costs no more (margin in "
              "NDS; 'within spread' where the margin is smaller than the larger seed spread)"]
    for b in sorted(table["gated"]):
        g = table["gated"][b]
        rivals = beats(g, statics)
        worst = rivals[0] if rivals else None
        verdict = ("no static configuration costs as little" if worst is None else
                   f"closest: {worst[0]} ({worst[1]:+.3f}{', within spread' if abs(worst[1]) <= worst[2] else ''})")
        lines.append(f"  budget {b}: cost {g['cost']:.2f} of full, {ratio(g['gflops'], full['gflops']):.2f}x full's "
                     f"GFLOPs, {ratio(g['ms'], full['ms']):.2f}x its ms, "
                     f"NDS {ratio(g['nds'], full['nds']):.2f}x full's; "
                     f"{len(rivals)} static configurations cost no more; {verdict}")
    o = table["oracle"]
    if o:
        lines.append(f"  oracle: NDS {o['nds']:.3f} ({ratio(o['nds'], full['nds']):.2f}x full) at cost "
                     f"{o['cost']:.2f}, {ratio(o['gflops'], full['gflops']):.2f}x full's GFLOPs")
    lines.append("")
    lines += selection_table("what the gate (at each budget b) and the oracle choose, share of frames per condition "
                             "(mean of seeds)", {**{f"b={b}": sel for b, sel in gate_selection.items()},
                                                 **({"oracle": oracle_selection_} if oracle_selection_ else {})})
    lines.append(f"\n{len(args.seeds)} seeds, took {seconds / 60:.1f} min")
    return "\n".join(lines)


COMPARE_HEADER = ("| gated runs           | choice      | NDS          | x full | cost  | GFLOPs x full | ms x full "
                  "| margin over frontier |")


def compare(paths: list[str]) -> list[str]:
    """Gate recipes side by side, from the NAME.json of one pareto run each (same seeds, split and dataroot): per
    recipe its full fusion and each budget, NDS (mean ± half the spread of its seeds), as a multiple of its own full
    fusion's, the mean cost, GFLOPs and interleaved ms as multiples of full's, and the margin over the static frontier
    of the same models."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    keys = {(tuple(r["seeds"]), r.get("split"), r.get("dataroot")) for r in runs}
    if len(keys) != 1:
        raise SystemExit(f"pareto.py --compare: the runs differ in seeds, split or dataroot: {sorted(map(str, keys))}")
    lines = [COMPARE_HEADER, separator(COMPARE_HEADER)]
    for path, r in zip(paths, runs):
        t, name = r["table"], r.get("gated_runs", path)
        full = t["static (gated model, gate overridden)"]["all high"]
        ms = t.get("interleaved_ms") or {}
        rows = [("full fusion", full, None, ms.get("all high"))]
        rows += [(f"budget {b}", t["gated"][b], r["frontier"].get(b), ms.get(f"gate, budget {b}"))
                 for b in sorted(t["gated"], key=float)]
        for choice, x, margins, timed in rows:
            ms_x = f"{ratio(timed['ms'], ms['all high']['ms']):9.2f}" if timed else f"{'-':>9}"
            if margins:
                mg = np.array([m["margin"] for m in margins])
                margin = f"{mg.mean():+.3f} ± {np.ptp(mg) / 2:.3f}"
            else:
                margin = "-"
            lines.append(f"| {name:<20} | {choice:<11} | {x['nds']:.3f} ± {x['nds_spread'] / 2:.3f} | "
                         f"{ratio(x['nds'], full['nds']):6.2f} | {x['cost']:.3f} | "
                         f"{ratio(x['gflops'], full['gflops']):13.2f} | {ms_x} | {margin:<20} |")
    return lines


def compare_main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="gate recipes side by side, from the NAME.json of one pareto run each")
    p.add_argument("--compare", nargs="+", required=True, metavar="NAME.json")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write the table to this file")
    args = p.parse_args(argv)
    lines = compare(args.compare)
    print("\n".join(lines))
    write_markdown(args.markdown, "\n".join(lines))
    return {"lines": lines}


if __name__ == "__main__":
    main()
