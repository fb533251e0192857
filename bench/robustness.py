"""Robustness under sensor noise and failure: NDS, mAP, relative accuracy and compute per corruption and severity.

    python bench/robustness.py --ckpt runs/demo/checkpoints/last.ckpt [B.ckpt ...] \
        --sensors "camera=high,lidar=fine,radar=on" "lidar=fine" [--severities 1 3 5] [--only NAME ...] \
        [--limit 40] [--dataroot data/synth-demo] [--out runs/robustness] [--cache-dir DIR] [--reuse] [--no-skip]

For every checkpoint and sensor configuration it runs eval.py's main once clean and once per corruption of
sensors/corruptions.py and severity (the faults, which have no severity, once each), each into
--out/<run>/<configuration>/<corruption>[_<severity>], and prints per corruption and severity NDS, mAP,
RA = NDS_corrupted / NDS_clean, GFLOPs per frame (torch's FLOP counter, as metrics.json reports it) and ms per frame,
and the share of frames in which each branch ran in each mode where it differs from the configuration (a sensor that
is not present is off; with a gate, its choices), then mRA over the suite and per sensor group. A corruption's RA
is the mean over the severities run; mRA the mean over corruptions. A corruption that cannot touch the
configuration (a camera corruption with the camera off) is not evaluated but counted as RA 1 and marked "skipped"
(--no-skip evaluates it). The wall time of the whole run is printed at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_SENSORS = "camera=high,lidar=fine,radar=on"


def plan(names: list[str], severities: list[int]) -> list[tuple[str, int | None]]:
    """(corruption, severity) pairs to run: every severity of a corruption that has them, None for a fault."""
    from sensors.corruptions import CORRUPTIONS
    return [(n, s) for n in names for s in (severities if CORRUPTIONS[n].has_severity else [None])]


def affects(name: str, sensors) -> bool:
    """Whether corruption `name` changes a sensor the configuration `sensors` (SensorConfig) runs."""
    from sensors.corruptions import CORRUPTIONS
    return any(getattr(sensors, s) != "off" for s in CORRUPTIONS[name].sensors)


def selection(records_path: Path) -> dict[str, dict[str, float]]:
    """Per sensor, the share of frames of records.jsonl in which its branch ran in each mode."""
    rows = [json.loads(line) for line in Path(records_path).read_text().splitlines() if line.strip()]
    out = {}
    for sensor in ("camera", "lidar", "radar"):
        counts = Counter(r[sensor] for r in rows)
        out[sensor] = {mode: n / max(len(rows), 1) for mode, n in counts.most_common()}
    return out


def format_selection(sel: dict[str, dict[str, float]] | None, sensors) -> str:
    """The modes that differ from the configuration `sensors`, e.g. 'lidar off 100%' ('' when none do)."""
    if not sel:
        return ""
    parts = []
    for sensor, freq in sel.items():
        if freq != {getattr(sensors, sensor): 1.0}:
            parts.append(f"{sensor} " + " ".join(f"{mode} {share:.0%}" for mode, share in freq.items()))
    return "; ".join(parts)


def summarize(clean: dict, runs: dict[tuple[str, int | None], dict | None]) -> dict:
    """RA per run (None: skipped, RA 1), RA per corruption (mean over its severities), mRA overall and per group.
    clean, runs' values: eval.py metrics dicts."""
    from sensors.corruptions import CORRUPTIONS, GROUPS

    base = clean["nds"]
    ra_run = {k: 1.0 if m is None else (m["nds"] / base if base > 0 else float("nan")) for k, m in runs.items()}
    per = {}
    for (name, _), ra in ra_run.items():
        per.setdefault(name, []).append(ra)
    ra_corr = {n: sum(v) / len(v) for n, v in per.items()}

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else None

    groups = {g: mean(ra for n, ra in ra_corr.items() if CORRUPTIONS[n].group == g) for g in GROUPS}
    return {"ra_run": ra_run, "ra_corruption": ra_corr, "mra": mean(ra_corr.values()), "mra_group": groups}


def format_report(title: str, clean: dict, runs: dict, selections: dict, sensors) -> str:
    """The table of one checkpoint and configuration, then its mRA lines."""
    from sensors.corruptions import CORRUPTIONS

    s = summarize(clean, runs)
    width = max([len("corruption")] + [len(n) for n, _ in runs])
    head = (f"| {'corruption':<{width}} | group        | sev | NDS   | mAP   | RA    | GFLOPs | ms/frame "
            f"| selection / note")
    lines = [title, head, "|" + "|".join("-" * len(c) for c in head[1:].split("|"))]

    def row(name, group, sev, m, ra, note):
        if m is None:
            return f"| {name:<{width}} | {group:<12} | {sev:>3} |   -   |   -   | {ra:5.3f} |    -   |     -    | {note}"
        return (f"| {name:<{width}} | {group:<12} | {sev:>3} | {m['nds']:.3f} | {m['map']:.3f} | {ra:5.3f} | "
                f"{m['gflops_per_frame']:6.2f} | {m['latency_ms']['mean']:8.1f} | {note}")

    lines.append(row("clean", "-", "-", clean, 1.0, format_selection(selections.get(("clean", None)), sensors)))
    for (name, sev), m in runs.items():
        note = "skipped: cannot affect this configuration (RA 1)" if m is None else \
            format_selection(selections.get((name, sev)), sensors)
        lines.append(row(name, CORRUPTIONS[name].group, "-" if sev is None else sev, m, s["ra_run"][(name, sev)],
                         note))
    def fmt(v):
        return "  -  " if v is None else f"{v:.3f}"

    lines.append("")
    lines.append(f"mRA {fmt(s['mra'])} over {len(s['ra_corruption'])} corruptions (RA per corruption: mean over "
                 f"severities; faults once); per group: "
                 + ", ".join(f"{g} {fmt(v)}" for g, v in s["mra_group"].items()))
    ran = [m for m in runs.values() if m is not None]
    if ran:
        lines.append(f"mean cost under corruption: {sum(m['gflops_per_frame'] for m in ran) / len(ran):.2f} GFLOPs, "
                     f"{sum(m['latency_ms']['mean'] for m in ran) / len(ran):.1f} ms per frame (clean "
                     f"{clean['gflops_per_frame']:.2f} GFLOPs, {clean['latency_ms']['mean']:.1f} ms)")
    skipped = [n for (n, _), m in runs.items() if m is None]
    if skipped:
        lines.append(f"skipped (RA 1, not evaluated: they touch only sensors this configuration runs off): "
                     f"{', '.join(dict.fromkeys(skipped))}")
    return "\n".join(lines)


def folder_name(name: str, severity: int | None) -> str:
    return name if severity is None else f"{name}_{severity}"


def main(argv=None) -> dict:
    from sensors.corruptions import CORRUPTIONS, SEVERITIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", default=["runs/demo/checkpoints/last.ckpt"])
    p.add_argument("--sensors", nargs="+", default=[DEFAULT_SENSORS], help="static configurations, each like "
                                                                          "'camera=high,lidar=fine,radar=on'")
    p.add_argument("--only", nargs="+", default=None, help="corruptions to run (default: all)")
    p.add_argument("--severities", type=int, nargs="+", default=list(SEVERITIES))
    p.add_argument("--limit", type=int, default=None, help="only the first N frames of the split")
    p.add_argument("--dataroot", default="data/synth-demo")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default="synth_val")
    p.add_argument("--out", default="runs/robustness")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="where the dataset index cache goes (eval.py --cache-dir)")
    p.add_argument("--reuse", action="store_true", help="reuse a metrics.json written for the same checkpoint "
                                                        "file, sensors, data, --limit, corruption and severity")
    p.add_argument("--no-skip", action="store_true", help="also evaluate corruptions that cannot affect a "
                                                          "configuration")
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(CORRUPTIONS))
    if unknown:
        p.error(f"--only: unknown corruptions {unknown}; valid corruptions: {', '.join(CORRUPTIONS)}")
    bad = sorted(set(args.severities) - set(SEVERITIES))
    if bad:
        p.error(f"--severities: invalid {bad}; valid severities: {list(SEVERITIES)}")
    missing = [c for c in args.ckpt if not Path(c).is_file()]
    if missing:
        p.error(f"--ckpt: no such file: {', '.join(missing)}")
    import eval as evaluate
    from bench.static_configs import reusable, run_dirs
    from fusion.detector import SensorConfig
    try:
        configs = [SensorConfig.parse(s) for s in args.sensors]
    except ValueError as e:
        p.error(f"--sensors: {e}")

    t0 = time.perf_counter()
    todo = plan(args.only or list(CORRUPTIONS), sorted(set(args.severities)))
    reports, results = [], {}
    for ckpt, out in zip(args.ckpt, run_dirs(args.ckpt, Path(args.out))):
        for sensors in configs:
            folder = out / str(sensors).replace(",", "_").replace("=", "-")
            base = ["--ckpt", ckpt, "--dataroot", args.dataroot, "--version", args.version, "--split", args.split,
                    "--sensors", str(sensors), "--num-workers", str(args.num_workers)]
            base += ["--limit", str(args.limit)] if args.limit else []
            base += ["--cache-dir", args.cache_dir] if args.cache_dir else []

            def run(name, severity, folder=folder, ckpt=ckpt, sensors=sensors, base=base):
                where = folder / ("clean" if name is None else folder_name(name, severity))
                if args.reuse:
                    m = reusable(where / "metrics.json", ckpt, str(sensors), args)
                    if m and m.get("corruption") == name and m.get("severity") == severity:
                        return m, selection(where / "records.jsonl")
                cmd = base + ["--out", str(where)]
                cmd += ["--corruption", name] if name else []
                cmd += ["--severity", str(severity)] if severity is not None else []
                return evaluate.main(cmd), selection(where / "records.jsonl")

            clean, sel_clean = run(None, None)
            runs, selections = {}, {("clean", None): sel_clean}
            for name, severity in todo:
                if not args.no_skip and not affects(name, sensors):
                    runs[(name, severity)] = None
                    continue
                runs[(name, severity)], selections[(name, severity)] = run(name, severity)
            title = f"{ckpt}  sensors {sensors}  ({args.split}, {clean['frames']} frames)"
            reports.append(format_report(title, clean, runs, selections, sensors))
            results[(ckpt, str(sensors))] = {"clean": clean, "runs": runs, "summary": summarize(clean, runs)}
    elapsed = time.perf_counter() - t0
    print()
    print("\n\n".join(reports))
    print(f"\nrobustness suite: {sum(len(r['runs']) + 1 for r in results.values())} rows, "
          f"{sum(1 + sum(m is not None for m in r['runs'].values()) for r in results.values())} evaluations, "
          f"{elapsed / 60:.1f} min wall time")
    return results


if __name__ == "__main__":
    main()
