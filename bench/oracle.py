"""The per-frame oracle over static sensor configurations: for each frame, the cheapest static configuration whose
detections there are as good as full fusion's, chosen with the ground truth. It bounds what a gate could save.

    python bench/oracle.py --ckpt runs/demo/checkpoints/last.ckpt --dataroot data/synth-demo [--version v1.0-synth]
        [--split synth_val] [--out runs/oracle] [--limit N] [--score-threshold 0.3] [--reuse]
        [--configs camera=high,lidar=fine,radar=on camera=off,lidar=off,radar=on ...] [--empty-max 5] [--dense-min 20]
    python bench/oracle.py --fine --ckpt C --dataroot D [--frames N] [--tiles 4] [--repeats 10] [--out runs/oracle]

--fine: the oracle below the sensor instead, per camera view and per BEV tile (bench/fine_oracle.py: its decision
space, its greedy search and its cost), beside full fusion and the per-frame static oracle, all three on the same
--frames frames evenly spread over the split (default all), scored by the devkit on those frames; it runs the model
itself (up to two choices per view and one per tile, and the 17 static configurations per frame) and
writes --out/fine/. The rest of this docstring is the per-frame oracle's.

For every static configuration of fusion.cost.static_configs() (17; --configs restricts them, full must be one) it
evaluates the checkpoint (fusion/evaluate.py) into --out/<configuration> (bench/common.py config_folder, e.g.
camera-high_lidar-fine_radar-on; --reuse takes a folder whose metrics.json was written for the same checkpoint file,
sensors, data and --limit). Then, per frame:

- score of a configuration = (ground-truth boxes matched by its detections with score > --score-threshold, those
  detections that matched nothing). Matching is the devkit's at its loosest threshold, 2 m (per class,
  detections by descending score each take the nearest free ground-truth box whose x-y centre is < 2 m away;
  report/run.match_frame). Both sides first go through the devkit's own filter, as DetectionEval does
  (class range of detection_cvpr_2019, ground truth without a LiDAR/radar point, bicycles in bike racks);
- cost = the frame's cost in that configuration's records.jsonl (the fraction of full by the model's latency table,
  the gate's unit), then its counted gflops, then its measured ms;
- the oracle's choice = the cheapest configuration that does at least as well as full fusion
  (camera=high,lidar=fine,radar=on): at least as many matches and at most as many false positives. Full always
  qualifies. (The difference matches - false positives >= full's was tried first: on 40 demo frames its oracle
  scored NDS 0.363 against full's 0.445, since a configuration that sees little qualifies by making few confident
  false positives, and AP, which integrates over all scores, pays for what it misses.)

It writes --out/oracle/results.json (each frame's detections from its chosen configuration), choices.jsonl (one line
per frame: the choice, its cost, every configuration's score) and metrics.json (the devkit's NDS/mAP of the oracle and
of full fusion overall and per frame group, GFLOPs and ms per frame of the choices, mean/p50/p95, and how often each
sensor mode and configuration was chosen), and prints full fusion against the oracle and the selection rates per
frame group. Frame groups: the records' conditions (day/dusk/night, clear/rain/fog, traffic-*), fault / no-fault (a
sensor fault in the frame) and empty / dense (at most --empty-max / at least --dense-min scored ground-truth boxes).

The oracle is not a detector: it picks with the ground truth, per frame, so its NDS can exceed full fusion's.
bench/frame_oracle.py computes it; its `oracle_from_dirs` builds it from evaluation folders that already exist (for
bench/pareto.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_eval_flags, config_folder, evaluation, run, separator, write_markdown  # noqa: E402
from bench.frame_oracle import FULL, SCORE_THRESHOLD, oracle_from_dirs, static_order  # noqa: E402
from bench import fine_oracle  # noqa: E402
from fusion.cost import TILES, static_configs  # noqa: E402


FINE_HEADER = fine_oracle.HEADER  # the --fine tables' columns (tests/test_docs_tables.py reads every *HEADER)
FINE_SELECTION_HEADER = fine_oracle.SELECTION_HEADER
HEADER = ("n   ", "NDS full", "NDS oracle", "GFLOPs full", "GFLOPs oracle", "ms full", "ms oracle")  # after 'frames'


def group_table(m: dict) -> str:
    """Full fusion against the oracle per frame group (NDS, mean GFLOPs and ms per frame), under its title: the
    table --markdown writes."""
    def nds(summary, group):
        s = summary if group == "overall" else summary["per_condition"].get(group)
        return f"{s['nds']:.3f}" if s else "  -  "

    width = max(len(g) for g in m["per_group"])
    title = (f"oracle over {len(m['configs'])} static configurations on {m['split']} ({m['frames']} frames): per "
             f"frame the cheapest whose detections (score > {m['score_threshold']}) match as many ground-truth boxes "
             f"within {m['max_dist']} m with no more false positives as full fusion's ({m['full']['config']})")
    head = f"| {'frames':<{width}} | " + " | ".join(HEADER) + " |"
    lines = [title, head, separator(head)]
    for g, p in m["per_group"].items():
        lines.append(f"| {g:<{width}} | {p['frames']:4d} | {nds(m['full'], g):>8} | {nds(m, g):>10} | "
                     f"{p['full_gflops_per_frame']['mean']:11.2f} | {p['gflops_per_frame']['mean']:13.2f} | "
                     f"{p['full_latency_ms']['mean']:7.1f} | {p['latency_ms']['mean']:9.1f} |")
    return "\n".join(lines)


def format_report(m: dict) -> str:
    """group_table, then the oracle's selection rates per sensor and mode, overall and per frame group."""
    from sensors.names import MODES, SENSORS

    width = max(len(g) for g in m["per_group"])
    heads = [f"{s} {mode}" for s in SENSORS for mode in MODES[s]]
    lines = [group_table(m), "", "the oracle's choices: share of frames per sensor mode",
             f"| {'frames':<{width}} | " + " | ".join(heads) + " |",
             f"|{'-' * (width + 2)}|" + "|".join("-" * (len(h) + 2) for h in heads) + "|"]
    for g, p in m["per_group"].items():
        cells = [f"{p['selection'][s][mode]:>{len(f'{s} {mode}')}.0%}" for s in SENSORS for mode in MODES[s]]
        lines.append(f"| {g:<{width}} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint written by train.py")
    p.add_argument("--score-threshold", type=float, default=SCORE_THRESHOLD,
                   help="detections with a higher score count in a frame's score")
    p.add_argument("--configs", nargs="+", default=None,
                   help="static configurations to choose from (default: all of fusion.cost.static_configs()); "
                        f"must include full fusion, {FULL}")
    p.add_argument("--empty-max", type=int, default=5, help="frames with at most this many ground-truth boxes: empty")
    p.add_argument("--dense-min", type=int, default=20, help="frames with at least this many ground-truth boxes: "
                                                             "dense")
    p.add_argument("--fine", action="store_true",
                   help="the oracle per camera view and per BEV tile instead (bench/fine_oracle.py), beside the "
                        "per-frame static oracle on the same frames, without evaluation folders")
    p.add_argument("--frames", type=int, default=None, help="--fine: this many frames evenly spread over the split "
                                                            "(default: all)")
    p.add_argument("--tiles", type=int, default=TILES, help="--fine: tiles per side of the BEV grid")
    p.add_argument("--repeats", type=int, default=10, help="--fine: timed runs per cost measurement (median)")
    add_eval_flags(p, out="runs/oracle", num_workers=2)
    args = p.parse_args(argv)
    if args.fine and args.limit is not None:
        p.error("--limit: --fine takes --frames (evenly spread over the split) instead")
    for name in ("frames", "tiles", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    from fusion.detector import SensorConfig
    try:
        args.configs = static_order(dict.fromkeys(str(SensorConfig.parse(c)) for c in args.configs)) \
            if args.configs else [str(c) for c in static_configs()]
    except ValueError as e:
        p.error(f"--configs: {e}")
    if FULL not in args.configs:
        p.error(f"--configs must include full fusion, {FULL}")
    if not Path(args.ckpt).is_file():
        p.error(f"--ckpt: no such file: {args.ckpt}")
    return args


def fine(args: argparse.Namespace, nusc) -> dict:
    """--fine: the oracle per view and per tile (bench/fine_oracle.py) on --frames frames evenly spread."""
    from datasets.evaluation import spread
    from datasets.nuscenes import NuScenesDataset
    from fusion.checkpoint import load_checkpoint
    from fusion.cost import fine_costs, synthetic_frame
    from fusion.evaluate import resolve_device
    from fusion.operating_points import data_settings
    from sensors.frame import collate

    device = resolve_device(args.device)
    model, data_hp = load_checkpoint(args.ckpt)
    model = model.to(device).eval()
    settings = data_settings(data_hp, args.cache_dir)
    dataset = NuScenesDataset(args.dataroot, args.version, args.split, **settings)
    positions = sorted(spread(len(dataset), args.frames) or range(len(dataset)))
    table = model.latency_table(collate([dataset[positions[0]]]).to(device))
    frame = synthetic_frame(model.detector.grid, settings["image_size"], 32768, 300).to(device)
    costs = fine_costs(model.detector, frame, table, args.repeats, args.tiles)
    metrics = fine_oracle.fine_oracle(model, dataset, positions, nusc, args.split, costs, table,
                                      Path(args.out) / "fine", args.score_threshold)
    print()
    print(fine_oracle.format_fine(metrics))
    write_markdown(args.markdown, fine_oracle.format_fine(metrics).split("\n\n")[0])
    return metrics


def main(argv=None) -> dict:
    args = parse_args(argv)
    from nuscenes import NuScenes

    if args.fine:
        return fine(args, NuScenes(version=args.version, dataroot=args.dataroot, verbose=False))
    out = Path(args.out)
    eval_dirs = {config: out / config_folder(config) for config in args.configs}
    for config, folder in eval_dirs.items():
        run(evaluation(args, args.ckpt, folder, sensors=config), args.reuse)
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    metrics = oracle_from_dirs(eval_dirs, nusc, args.split, out / "oracle", args.score_threshold, args.empty_max,
                               args.dense_min)
    print()
    print(format_report(metrics))
    write_markdown(args.markdown, group_table(metrics))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        sys.exit(f"oracle.py: error: {e}")
