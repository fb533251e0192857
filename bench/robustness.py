"""Robustness under sensor noise and failure: NDS, mAP, relative accuracy and compute per corruption and severity.

    python bench/robustness.py --ckpt runs/demo/checkpoints/last.ckpt [B.ckpt ...] \
        --sensors "camera=high,lidar=fine,radar=on" "lidar=fine" [--budgets 0.5 0.8] [--severities 1 3 5] \
        [--only NAME ...] [--limit 40] [--dataroot data/synth-demo] [--out runs/robustness] [--reuse] [--no-skip]
    python bench/robustness.py --ckpt runs/demo-gated/checkpoints/last.ckpt --budgets 0.5 --frontier \
        --only camera_missing_one camera_missing_all lidar_missing radar_dropout --severities 3

For every checkpoint and every choice (each static configuration of --sensors; for a gated checkpoint, when --budgets
is given, the gate at each budget instead) it evaluates (fusion/evaluate.py) once clean and once per corruption of
sensors/corruptions.py and severity (the faults, which have no severity, once each), each into
--out/<run>/<configuration | budget-B>/<corruption>[_<severity>], and prints per corruption and severity NDS, mAP, RA
= NDS_corrupted / NDS_clean, the mean cost per frame (a fraction of the full configuration's, by the model's latency
table, as records.jsonl) and the measured ms per frame, and which sensors ran: for a static configuration the branches
that ran in another mode (a sensor that is not present is off), for the gate how its choices moved from the clean
frames. Then mRA over the suite and per sensor group. A corruption's RA is the mean over the severities run; mRA the
mean over corruptions. A corruption that cannot touch a static configuration (a camera corruption with the camera off)
is not evaluated but counted as RA 1 and marked "skipped" (--no-skip evaluates it); the gate may choose any sensor, so
it meets every corruption. Under every corruption the gate runs at the clean run's operating point, its gate offsets
and the price calibrated for its budget (training frames, as eval.py --budget; eval.py --operating-point), so that
its own risk estimates decide what a degraded or dead sensor is still worth: the cost column shows how a corruption
moves its spending. --budget-control G (eval.py's) instead steers the price as the frames stream to hold the mean
cost at the budget, so that compute a dead sensor no longer earns is spent elsewhere. FLOPs and latency are
measured on --measure-frames frames only (fusion.cost gives each configuration's), and the per-condition scores
are left out: the suite runs hundreds of evaluations. With several runs, one table across them all follows (RA per
corruption, the gate's cost). A checkpoint trained on corrupted frames (the datamodule's train_corruptions, e.g.
configs/robust.yaml) has the corruptions it saw marked "+" and its mRA also over the ones it did not see;
the cross-run table adds mRA over the corruptions that no run in it saw in training, the fair comparison. With
--frontier, a gated checkpoint also runs every one of the 17 static configurations (bench/common.py CONFIGS) under
the same corruptions, and a last table sets the gate at each budget against the static frontier under each
corruption: the upper hull of the static configurations' (mean cost, NDS) under it (a configuration the corruption
cannot touch keeps its clean point), read at the gate's mean cost under it (bench/common.py upper_hull). The wall
time of the whole run is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (CONFIGS, add_eval_flags, budget_folder, config_folder, evaluation,  # noqa: E402
                          frontier_margins, reusable, run_dirs, separator, write_markdown)
from fusion.checkpoint import load_checkpoint  # noqa: E402
from fusion.evaluate import evaluate, format_metrics  # noqa: E402

DEFAULT_SENSORS = "camera=high,lidar=fine,radar=on"


def plan(names: list[str], severities: list[int]) -> list[tuple[str, int | None]]:
    """(corruption, severity) pairs to run: every severity of a corruption that has them, None for a fault."""
    from sensors.corruptions import CORRUPTIONS
    return [(n, s) for n in names for s in (severities if CORRUPTIONS[n].has_severity else [None])]


def affects(name: str, sensors) -> bool:
    """Whether corruption `name` changes a sensor the configuration `sensors` (SensorConfig; None: the gate, which
    may choose any) runs."""
    from sensors.corruptions import CORRUPTIONS
    return sensors is None or any(getattr(sensors, s) != "off" for s in CORRUPTIONS[name].sensors)


def selection(records_path: Path) -> dict[str, dict[str, float]]:
    """Per sensor, the share of frames of records.jsonl in which its branch ran in each mode."""
    rows = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()]
    out = {}
    for sensor in ("camera", "lidar", "radar"):
        counts = Counter(r[sensor] for r in rows)
        out[sensor] = {mode: n / max(len(rows), 1) for mode, n in counts.most_common()}
    return out


def format_selection(sel: dict[str, dict[str, float]] | None, reference: dict[str, dict[str, float]],
                     min_shift: float = 0.05) -> str:
    """The modes whose share of frames moved by at least `min_shift` from `reference` (a static configuration's
    {sensor: {mode: 1.0}}, or the gate's clean selection), e.g. 'lidar off 100% (0%)' ('' when none did)."""
    if not sel:
        return ""
    parts = []
    for sensor, freq in sel.items():
        ref = reference.get(sensor, {})
        moved = [(mode, freq.get(mode, 0.0), ref.get(mode, 0.0)) for mode in dict.fromkeys([*freq, *ref])]
        parts += [f"{sensor} {mode} {now:.0%} ({was:.0%})" for mode, now, was in moved if abs(now - was) >= min_shift]
    return "; ".join(parts)


def gate_selection(sel: dict[str, dict[str, float]]) -> str:
    """The gate's choices in one line, e.g. 'camera high 40% low 60%, lidar fine 100%, radar on 100%'."""
    return ", ".join(f"{sensor} " + " ".join(f"{mode} {share:.0%}" for mode, share in freq.items() if share > 0)
                     for sensor, freq in sel.items())


def trained_on(data_hparams: dict) -> tuple[str, ...]:
    """The corruptions a checkpoint saw in training (its datamodule's train_corruptions, when their probability
    was above 0)."""
    if float(data_hparams.get("train_corruption_prob") or 0.0) <= 0:
        return ()
    return tuple(data_hparams.get("train_corruptions") or ())


def summarize(clean: dict, runs: dict[tuple[str, int | None], dict | None], seen=()) -> dict:
    """RA per run (None: skipped, RA 1), RA per corruption (mean over its severities), mRA overall and per group,
    and over the corruptions not in `seen` (those the checkpoint saw in training). clean, runs' values: eval.py
    metrics dicts."""
    from sensors.corruptions import CORRUPTIONS, GROUPS

    base, seen = clean["nds"], set(seen)
    ra_run = {k: 1.0 if m is None else (m["nds"] / base if base > 0 else float("nan")) for k, m in runs.items()}
    per = {}
    for (name, _), ra in ra_run.items():
        per.setdefault(name, []).append(ra)
    ra_corr = {n: sum(v) / len(v) for n, v in per.items()}

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else None

    groups = {g: mean(ra for n, ra in ra_corr.items() if CORRUPTIONS[n].group == g) for g in GROUPS}
    return {"ra_run": ra_run, "ra_corruption": ra_corr, "mra": mean(ra_corr.values()), "mra_group": groups,
            "seen": [n for n in ra_corr if n in seen],
            "mra_unseen": mean(ra for n, ra in ra_corr.items() if n not in seen)}


def format_report(title: str, clean: dict, runs: dict, selections: dict, reference: dict, seen=()) -> str:
    """The table of one checkpoint and choice, then its mRA lines. reference: the selection a row's is compared
    with (see format_selection); seen: the corruptions the checkpoint saw in training (marked +)."""
    from sensors.corruptions import CORRUPTIONS

    s = summarize(clean, runs, seen)
    width = max([len("corruption")] + [len(n) + 1 for n, _ in runs])
    head = (f"| {'corruption':<{width}} | group        | sev | NDS   | mAP   | RA    | cost  | ms/frame "
            f"| selection: moved from {'clean' if clean.get('budget') is not None else 'the configuration'} (was)")
    lines = [title, head, "|" + "|".join("-" * len(c) for c in head[1:].split("|"))]

    def row(name, group, sev, m, ra, note):
        if m is None:
            return f"| {name:<{width}} | {group:<12} | {sev:>3} |   -   |   -   | {ra:5.3f} |   -   |     -    | {note}"
        return (f"| {name:<{width}} | {group:<12} | {sev:>3} | {m['nds']:.3f} | {m['map']:.3f} | {ra:5.3f} | "
                f"{m['cost_per_frame']['mean']:.3f} | {m['latency_ms']['mean']:8.1f} | {note}")

    clean_note = gate_selection(selections[("clean", None)]) if clean.get("budget") is not None else \
        format_selection(selections.get(("clean", None)), reference)
    lines.append(row("clean", "-", "-", clean, 1.0, clean_note))
    for (name, sev), m in runs.items():
        note = "skipped: cannot affect this configuration (RA 1)" if m is None else \
            format_selection(selections.get((name, sev)), reference)
        lines.append(row(name + ("+" if name in s["seen"] else ""), CORRUPTIONS[name].group,
                         "-" if sev is None else sev, m, s["ra_run"][(name, sev)], note))

    def fmt(v):
        return "  -  " if v is None else f"{v:.3f}"

    lines.append("")
    lines.append(f"mRA {fmt(s['mra'])} over {len(s['ra_corruption'])} corruptions (RA per corruption: mean over "
                 f"severities; faults once); per group: "
                 + ", ".join(f"{g} {fmt(v)}" for g, v in s["mra_group"].items()))
    if s["seen"]:
        lines.append(f"+ seen in training (corruption augmentation): {len(s['seen'])} corruptions; mRA over the "
                     f"{len(s['ra_corruption']) - len(s['seen'])} not seen: {fmt(s['mra_unseen'])}")
    ran = [m for m in runs.values() if m is not None]
    if ran:
        lines.append(f"mean cost under corruption: {sum(m['cost_per_frame']['mean'] for m in ran) / len(ran):.3f} "
                     f"of full, {sum(m['latency_ms']['mean'] for m in ran) / len(ran):.1f} ms per frame (clean "
                     f"{clean['cost_per_frame']['mean']:.3f}, {clean['latency_ms']['mean']:.1f} ms)")
    skipped = [n for (n, _), m in runs.items() if m is None]
    if skipped:
        lines.append(f"skipped (RA 1, not evaluated: they touch only sensors this configuration runs off): "
                     f"{', '.join(dict.fromkeys(skipped))}")
    return "\n".join(lines)


SUMMARY_HEADER = ("corruption", "group")  # format_summary's first columns; one column per run follows


def format_summary(results: dict) -> str:
    """One table across every checkpoint and choice run: per corruption its RA (mean over the severities run) and,
    for the gate, its mean cost per frame (fraction of full); then clean NDS, mRA, mRA per group and, when a run was
    trained on corruptions (marked +), mRA over the corruptions that no run saw in training."""
    from sensors.corruptions import CORRUPTIONS, GROUPS

    names = list(dict.fromkeys(n for r in results.values() for n, _ in r["runs"]))
    cols = [(f"{Path(ckpt).resolve().parent.parent.name} {label}", r) for (ckpt, label), r in results.items()]

    def cost(r, name):
        ran = [m for (n, _), m in r["runs"].items() if n == name and m is not None]
        return sum(m["cost_per_frame"]["mean"] for m in ran) / len(ran) if ran else None

    def cell(r, name):
        ra = r["summary"]["ra_corruption"][name]
        c = cost(r, name) if r["clean"].get("budget") is not None else None
        return f"{ra:.3f}" + (f" ({c:.2f})" if c is not None else "") + \
            ("*" if all(m is None for (n, _), m in r["runs"].items() if n == name) else "") + \
            ("+" if name in r["summary"]["seen"] else "")

    lines = ["RA per corruption (mean over severities) of every run; (cost per frame, fraction of full) for the gate; "
             "* skipped (cannot touch the configuration); + seen in training",
             "| " + " | ".join(SUMMARY_HEADER) + " | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    lines.append("| clean NDS | - | " + " | ".join(
        f"{r['clean']['nds']:.3f}" + (f" ({r['clean']['cost_per_frame']['mean']:.2f})"
                                      if r["clean"].get("budget") is not None else "") for _, r in cols) + " |")
    lines += [f"| {n} | {CORRUPTIONS[n].group} | " + " | ".join(cell(r, n) for _, r in cols) + " |" for n in names]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines.append("| **mRA** | all | " + " | ".join(fmt(r["summary"]["mra"]) for _, r in cols) + " |")
    lines += [f"| mRA | {g} | " + " | ".join(fmt(r["summary"]["mra_group"][g]) for _, r in cols) + " |"
              for g in GROUPS]
    seen = {n for _, r in cols for n in r["summary"]["seen"]}
    unseen = [n for n in names if n not in seen]
    if seen:
        lines.append(f"| mRA | not seen in training by any run ({len(unseen)}) | " + " | ".join(
            fmt(sum(r["summary"]["ra_corruption"][n] for n in unseen) / len(unseen) if unseen else None)
            for _, r in cols) + " |")
    return "\n".join(lines)


def frontier_rows(gates: dict[float, dict], statics: dict[str, dict]) -> list[dict]:
    """The gate at each budget against the static frontier, clean and under each corruption and severity run. gates:
    budget -> {"clean": metrics, "runs": {(corruption, severity): metrics}}; statics: configuration -> the same, a
    skipped run None (the corruption cannot touch it: its clean metrics hold)."""
    def point(m):
        return {"cost": m["cost_per_frame"]["mean"], "nds": m["nds"]}

    keys = [("clean", None)] + list(next(iter(gates.values()))["runs"])
    rows = []
    for key in keys:
        def under(r):
            return r["clean"] if key == ("clean", None) or r["runs"][key] is None else r["runs"][key]
        gate = {b: point(under(r)) for b, r in gates.items()}
        margins = frontier_margins(gate, {name: point(under(r)) for name, r in statics.items()})
        rows += [{"corruption": key[0], "severity": key[1], "budget": b, "nds": gate[b]["nds"],
                  "cost": gate[b]["cost"], **margins[b]} for b in gates]
    return rows


FRONTIER_HEADER = ("| corruption          | sev | budget | gate NDS | gate cost | frontier NDS | margin "
                   "| frontier mixes                                        |")


def format_frontier(title: str, rows: list[dict]) -> str:
    """The table of frontier_rows."""
    lines = [title, FRONTIER_HEADER, separator(FRONTIER_HEADER)]
    for r in rows:
        lines.append(f"| {r['corruption']:<19} | {'-' if r['severity'] is None else r['severity']:>3} | "
                     f"{r['budget']:<6} | {r['nds']:8.3f} | {r['cost']:9.3f} | {r['frontier_nds']:12.3f} | "
                     f"{r['margin']:+6.3f} | {r['mix']:<53} |")
    return "\n".join(lines)


def folder_name(name: str, severity: int | None) -> str:
    return name if severity is None else f"{name}_{severity}"


def parse_args(argv=None) -> argparse.Namespace:
    from sensors.corruptions import CORRUPTIONS, SEVERITIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", default=["runs/demo/checkpoints/last.ckpt"])
    p.add_argument("--sensors", nargs="+", default=[DEFAULT_SENSORS],
                   help="static configurations, each like 'camera=high,lidar=fine,radar=on', run on every checkpoint "
                        "without a gate, and on gated ones when no --budgets is given")
    p.add_argument("--budgets", type=float, nargs="+", default=[],
                   help="gated checkpoints run the gate at each of these budgets (eval.py --budget) instead")
    p.add_argument("--budget-control", type=float, default=0.0,
                   help="steer the gate's price under corruption to hold the budget (eval.py --budget-control, the "
                        "gain; 0: the clean price throughout)")
    p.add_argument("--only", nargs="+", default=None, help="corruptions to run (default: all)")
    p.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
    p.add_argument("--measure-frames", type=int, default=8,
                   help="frames whose latency and FLOPs are measured (eval.py)")
    p.add_argument("--no-skip", action="store_true", help="also evaluate corruptions that cannot affect a "
                                                          "configuration")
    p.add_argument("--frontier", action="store_true",
                   help="gated checkpoints also run all 17 static configurations (not --sensors) under the same "
                        "corruptions, and the gate at each budget is set against their frontier under each")
    add_eval_flags(p, out="runs/robustness", num_workers=1)
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(CORRUPTIONS))
    if unknown:
        p.error(f"--only: unknown corruptions {unknown}; valid corruptions: {', '.join(CORRUPTIONS)}")
    bad = sorted(set(args.severities) - set(SEVERITIES))
    if bad:
        p.error(f"--severities: invalid {bad}; valid severities: {list(SEVERITIES)}")
    if args.frontier and not args.budgets:
        p.error("--frontier: needs --budgets (the gate is what is set against the static frontier)")
    if any(not 0 < b <= 1 for b in args.budgets):
        p.error(f"--budgets: each must be in (0, 1] (a fraction of the full configuration's cost), got "
                f"{args.budgets}")
    missing = [c for c in args.ckpt if not Path(c).is_file()]
    if missing:
        p.error(f"--ckpt: no such file: {', '.join(missing)}")
    from fusion.detector import SensorConfig
    try:
        args.sensors = [SensorConfig.parse(s) for s in args.sensors]
    except ValueError as e:
        p.error(f"--sensors: {e}")
    return args


def run_choice(args, ckpt: str, folder: Path, sensors, budget: float | None, todo: list) -> tuple[dict, dict, dict]:
    """(clean metrics, metrics per (corruption, severity): None where skipped, selections) of one checkpoint and one
    choice (static `sensors`, or the gate at `budget`), into folder/clean and folder/<corruption>[_<severity>]; the
    gate keeps the clean run's operating point under every corruption."""
    def run(name, severity, point=None):
        where = folder / ("clean" if name is None else folder_name(name, severity))
        ev = evaluation(args, ckpt, where, measure_frames=args.measure_frames, per_condition=False, corruption=name,
                        severity=severity, operating_point=point and str(point["path"]),
                        **({"sensors": str(sensors)} if sensors is not None else
                           {"budget": budget, "budget_control": args.budget_control}))
        m = reusable(ev) if args.reuse else None
        if m is None or (point is not None and m.get("price") != point["price"]):
            m = evaluate(ev)
            print(format_metrics(m))
        return m, selection(where / "records.jsonl")

    clean, sel_clean = run(None, None)
    point = {"path": folder / "clean" / "metrics.json", "price": clean["price"]} if budget is not None else None
    runs, selections = {}, {("clean", None): sel_clean}
    for name, severity in todo:
        if not args.no_skip and not affects(name, sensors):
            runs[(name, severity)] = None
            continue
        runs[(name, severity)], selections[(name, severity)] = run(name, severity, point)
    return clean, runs, selections


def main(argv=None) -> dict:
    from sensors.corruptions import CORRUPTIONS

    args = parse_args(argv)
    t0 = time.perf_counter()
    todo = plan(args.only or list(CORRUPTIONS), sorted(set(args.severities)))
    from fusion.detector import SensorConfig

    reports, results, frontiers = [], {}, []
    for ckpt, out in zip(args.ckpt, run_dirs(args.ckpt, Path(args.out))):
        model, data_hparams = load_checkpoint(ckpt)
        gated, seen = model.gate is not None, trained_on(data_hparams)
        choices = [(f"gate, budget {b}" + (f", control {args.budget_control}" if args.budget_control else ""), None, b)
                   for b in args.budgets] \
            if gated and args.budgets else [(str(c), c, None) for c in args.sensors]
        if gated and args.frontier:
            choices += [(c, SensorConfig.parse(c), None) for c in CONFIGS.values()]
        gates, statics = {}, {}
        for label, sensors, budget in choices:
            folder = out / (budget_folder(budget, args.budget_control) if sensors is None else config_folder(label))
            clean, runs, selections = run_choice(args, ckpt, folder, sensors, budget, todo)
            reference = sel_clean_or_config(selections[("clean", None)], sensors)
            what = label if sensors is None else f"sensors {label}"
            title = f"{ckpt}  {what}  ({args.split}, {clean['frames']} frames)"
            reports.append(format_report(title, clean, runs, selections, reference, seen))
            results[(ckpt, label)] = {"clean": clean, "runs": runs, "summary": summarize(clean, runs, seen),
                                      "selections": selections}
            if sensors is None:
                gates[budget] = results[(ckpt, label)]
            else:  # by the configuration's name in the frontier's table ("lidar+radar")
                statics[{c: name for name, c in CONFIGS.items()}.get(label, label)] = results[(ckpt, label)]
        if gated and args.frontier:
            rows = frontier_rows(gates, statics)
            for b, label in zip(args.budgets, [c[0] for c in choices]):
                results[(ckpt, label)]["frontier"] = [r for r in rows if r["budget"] == b]
            frontiers.append(format_frontier(
                f"{ckpt}: the gate against the static frontier of its {len(statics)} static configurations, clean "
                f"and under each corruption (margin: gate NDS - frontier NDS at the gate's mean cost)", rows))
    elapsed = time.perf_counter() - t0
    print()
    print("\n\n".join(reports))
    if len(results) > 1:
        print()
        print(format_summary(results))
    for table in frontiers:
        print()
        print(table)
    print(f"\nrobustness suite: {sum(len(r['runs']) + 1 for r in results.values())} rows, "
          f"{sum(1 + sum(m is not None for m in r['runs'].values()) for r in results.values())} evaluations, "
          f"{elapsed / 60:.1f} min wall time")
    write_markdown(args.markdown, "\n\n".join([format_summary(results)] + frontiers))
    return results


def sel_clean_or_config(sel_clean: dict, sensors) -> dict:
    """What a row's selection is compared with: the gate's clean selection, or the static configuration's modes."""
    return sel_clean if sensors is None else {s: {getattr(sensors, s): 1.0} for s in ("camera", "lidar", "radar")}


if __name__ == "__main__":
    main()
