"""The per-frame oracle over static sensor configurations, as bench/oracle.py and bench/pareto.py compute it from
evaluation folders of one checkpoint (fusion/evaluate.py's results.json, records.jsonl, metrics.json): per frame, the
cheapest configuration whose detections there are as good as full fusion's, chosen with the ground truth (the rule
and the files written: bench/oracle.py). Not a bench itself: it has no command line."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion.cost import static_configs

SCORE_THRESHOLD = 0.3
MAX_DIST = 2.0
FULL = str(static_configs()[0])  # every sensor at its top mode: camera=high,lidar=fine,radar=on

Boxes = dict[str, list[dict]]  # sample_token -> devkit-layout boxes (results.json rows, serialised DetectionBoxes)


# ----------------------------------------------------------------------------------------------- per frame

def frame_score(detections: list[dict], gt: list[dict], threshold: float, max_dist: float = MAX_DIST
                ) -> tuple[int, int]:
    """(ground-truth boxes matched by a detection with detection_score > threshold, such detections that match
    nothing); the devkit's matching rule (match_frame) on x-y centres of devkit-layout dicts (translation,
    detection_name, detection_score). No range filtering here: the caller passes the boxes the devkit would score."""
    from report.run import match_frame
    from sensors.names import CLASSES

    dets = [d for d in detections if d["detection_score"] > threshold]

    def centres(rows):
        boxes = np.zeros((len(rows), 9))
        boxes[:, :2] = [r["translation"][:2] for r in rows] or np.zeros((0, 2))
        return boxes

    pred = {"boxes": centres(dets), "labels": np.array([CLASSES.index(d["detection_name"]) for d in dets], dtype=int),
            "scores": np.array([d["detection_score"] for d in dets], dtype=np.float64)}
    gt_labels = np.array([CLASSES.index(g["detection_name"]) for g in gt], dtype=int)
    q = match_frame(pred, centres(gt), gt_labels, ranges=np.full(len(CLASSES), np.inf), distance=max_dist)
    return int(q.matched), int(q.false_positives)


def at_least_as_good(score: tuple[int, int], reference: tuple[int, int]) -> bool:
    """At least as many matches and at most as many false positives."""
    return score[0] >= reference[0] and score[1] <= reference[1]


def choose(scores: dict[str, tuple[int, int]], costs: dict[str, tuple[float, ...]], full: str = FULL) -> str:
    """The configuration with the lowest cost tuple among those at_least_as_good as scores[full]; ties after that go
    to the earlier key of `scores` (oracle_results gives them in static_configs() order). `full` always qualifies,
    so there is always an answer."""
    if full not in scores:
        raise ValueError(f"choose: full fusion {full!r} has no score (configurations: {', '.join(scores)})")
    order = list(scores)
    ok = [c for c in order if at_least_as_good(scores[c], scores[full])]
    return min(ok, key=lambda c: (*costs[c], order.index(c)))


def static_order(configs) -> list[str]:
    """Configuration strings sorted as static_configs() lists them (unknown strings last, in the given order)."""
    rank = {str(c): i for i, c in enumerate(static_configs())}
    return sorted(configs, key=lambda c: rank.get(c, len(rank)))


def measured_or_mean(records: dict[str, dict], tokens: list[str], key: str) -> dict[str, float]:
    """records[t][key] for each token, or where it was not measured (NaN: eval.py --measure-frames measures latency
    and FLOPs on a sample of frames) the mean over the frames where it was."""
    values = np.array([records[t][key] for t in tokens], dtype=np.float64)
    fill = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return {t: float(v) if np.isfinite(v) else fill for t, v in zip(tokens, values)}


def oracle_results(eval_dirs: dict[str, Path], gt_by_token: Boxes, threshold: float = SCORE_THRESHOLD,
                   full: str = FULL, keep: Callable[[Boxes], Boxes] | None = None,
                   max_dist: float = MAX_DIST) -> tuple[Boxes, list[dict]]:
    """(merged results, choices) from eval.py folders of static configurations of one model on the same frames.

    eval_dirs: configuration string -> eval.py output folder (metrics.json, results.json, records.jsonl).
    gt_by_token: the ground truth the devkit scores, per frame of full's records (load_ground_truth).
    keep: applied to each configuration's detections (above the threshold) before scoring; oracle_from_dirs passes
    the devkit's range filter. The merged results hold each frame's unfiltered detections from its chosen
    configuration. choices: one dict per frame in full's records order: sample_token, scene, config, its camera /
    lidar / radar modes, ran (the modes its record says ran: a sensor not present in a frame is off), gflops,
    latency_ms, score, full's score / gflops / latency_ms, gt (boxes scored), conditions, faults, and scores (every
    configuration's). One results.json is in memory at a time.
    """
    from report.run import load_run
    from fusion.detector import SensorConfig
    from sensors.names import SENSORS

    if full not in eval_dirs:
        raise ValueError(f"oracle: full fusion {full!r} is not among the configurations ({', '.join(eval_dirs)})")
    configs = static_order(eval_dirs)
    frames, scores, costs, ran = [], {}, {}, {}
    for c in [full] + [c for c in configs if c != full]:
        run = load_run(eval_dirs[c])
        records = {r["sample_token"]: r for r in run.records}
        frames = run.records if c == full else frames
        missing = [r["sample_token"] for r in frames if r["sample_token"] not in records]
        if missing:
            raise ValueError(f"oracle: {eval_dirs[c]} has no record of {len(missing)} of full fusion's {len(frames)} "
                             f"frames (e.g. {missing[0]}); evaluate every configuration on the same frames")
        tokens = [r["sample_token"] for r in frames]
        no_gt = [t for t in tokens if t not in gt_by_token]
        if no_gt:
            raise ValueError(f"oracle: no ground truth for {len(no_gt)} frames (e.g. {no_gt[0]})")
        above = {t: [d for d in run.results.get(t, []) if d["detection_score"] > threshold] for t in tokens}
        above = keep(above) if keep else above
        scores[c] = {t: frame_score(above[t], gt_by_token[t], threshold, max_dist) for t in tokens}
        gflops, ms = (measured_or_mean(records, tokens, key) for key in ("gflops", "latency_ms"))
        costs[c] = {t: (records[t].get("cost", 0.0), gflops[t], ms[t]) for t in tokens}
        ran[c] = {t: {s: records[t].get(s) for s in SENSORS} for t in tokens}

    choices = []
    for r in frames:
        t = r["sample_token"]
        pick = choose({c: scores[c][t] for c in configs}, {c: costs[c][t] for c in configs}, full)
        modes = SensorConfig.parse(pick)
        choices.append({"sample_token": t, "scene": r.get("scene"), "config": pick, "camera": modes.camera,
                        "lidar": modes.lidar, "radar": modes.radar, "ran": ran[pick][t], "cost": costs[pick][t][0],
                        "gflops": costs[pick][t][1], "latency_ms": costs[pick][t][2], "score": scores[pick][t],
                        "full_score": scores[full][t], "full_gflops": costs[full][t][1],
                        "full_latency_ms": costs[full][t][2],
                        "gt": len(gt_by_token[t]), "conditions": list(r.get("conditions", [])),
                        "faults": list(r.get("faults", [])), "scores": {c: scores[c][t] for c in configs}})
    merged: Boxes = {}
    for c in configs:
        picked = [ch["sample_token"] for ch in choices if ch["config"] == c]
        if picked:
            results = load_run(eval_dirs[c]).results
            merged.update({t: results.get(t, []) for t in picked})
    return {ch["sample_token"]: merged[ch["sample_token"]] for ch in choices}, choices


# ----------------------------------------------------------------------------------------------- ground truth

def devkit_filtered(nusc, boxes) -> Boxes:
    """The boxes of an EvalBoxes that DetectionEval scores, serialised per sample token: the devkit's add_center_dist
    and filter_eval_boxes with detection_cvpr_2019's class ranges (distance per class, ground truth without a LiDAR or
    radar point, bicycles and motorcycles in a bike rack). A set without any box passes through (the devkit's filter
    asserts on one)."""
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    from nuscenes.eval.detection.config import config_factory

    if boxes.all:
        boxes = filter_eval_boxes(nusc, add_center_dist(nusc, boxes), config_factory("detection_cvpr_2019").class_range)
    return {t: [b.serialize() for b in boxes[t]] for t in boxes.sample_tokens}


def detections_filter(nusc) -> Callable[[Boxes], Boxes]:
    """results.json rows per token -> those DetectionEval keeps (devkit_filtered), for oracle_results(keep=...)."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    return lambda results: devkit_filtered(nusc, EvalBoxes.deserialize(results, DetectionBox))


def load_ground_truth(nusc, split: str, tokens: list[str]) -> Boxes:
    """Ground truth of the frames `tokens` of `split` as DetectionEval loads and filters it: load_gt for an official
    split, load_gt_of_sample_tokens on the split's samples for a custom one (splits.json), then devkit_filtered."""
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import get_samples_of_custom_split, load_gt, load_gt_of_sample_tokens
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.utils.splits import is_predefined_split

    wanted = set(tokens)
    if is_predefined_split(split_name=split):
        gt = load_gt(nusc, split, DetectionBox)
    else:
        gt = load_gt_of_sample_tokens(nusc, [t for t in get_samples_of_custom_split(split_name=split, nusc=nusc)
                                             if t in wanted], DetectionBox)
    outside = [t for t in tokens if t not in gt.boxes]
    if outside:
        raise ValueError(f"oracle: {len(outside)} frames are not in split '{split}' (e.g. {outside[0]})")
    mine = EvalBoxes()
    for t in tokens:
        mine.add_boxes(t, gt[t])
    return devkit_filtered(nusc, mine)


# ----------------------------------------------------------------------------------------------- the oracle

def frame_groups(choices: list[dict], empty_max: int = 5, dense_min: int = 20) -> dict[str, list[str]]:
    """Sample tokens per frame group: eval.py's condition subsets (day..fog, fault, no-fault), then the records'
    other conditions (e.g. traffic-dense), then empty (<= empty_max scored ground-truth boxes) and dense
    (>= dense_min). Groups without a frame are left out."""
    from datasets.evaluation import condition_subsets
    from sensors.frame import FrameMeta

    metas = [FrameMeta(c["sample_token"], c.get("scene") or "", 0, tuple(c["conditions"]), tuple(c["faults"]))
             for c in choices]
    groups = condition_subsets(metas)
    for tag in sorted({t for c in choices for t in c["conditions"]} - set(groups)):
        groups[tag] = [c["sample_token"] for c in choices if tag in c["conditions"]]
    groups["empty"] = [c["sample_token"] for c in choices if c["gt"] <= empty_max]
    groups["dense"] = [c["sample_token"] for c in choices if c["gt"] >= dense_min]
    return {k: v for k, v in groups.items() if v}


def stats(values) -> dict:
    """mean, p50 and p95 of per-frame values."""
    a = np.asarray(list(values), dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95))}


def selection(choices: list[dict]) -> dict:
    """Share of `choices` per sensor and mode ({sensor: {mode: share}}, every mode listed)."""
    from sensors.names import MODES, SENSORS

    n = max(len(choices), 1)
    return {s: {m: sum(c[s] == m for c in choices) / n for m in MODES[s]} for s in SENSORS}


def oracle_from_dirs(eval_dirs: dict[str, Path], nusc, split: str, out: str | Path,
                     threshold: float = SCORE_THRESHOLD, empty_max: int = 5, dense_min: int = 20,
                     full: str = FULL) -> dict:
    """The oracle over existing eval.py folders of one checkpoint on the same data (configuration string -> folder;
    their metrics.json must agree on checkpoint, data and --limit): writes out/results.json, out/choices.jsonl and
    out/metrics.json (the devkit's metrics of the oracle's results and of full's, overall and per frame_groups;
    cost stats; selection shares), and returns the metrics."""
    from datasets.evaluation import official_eval, write_json, write_results
    from report.run import load_run
    from sensors.names import SENSORS

    out = Path(out)
    source = {}
    keys = ("checkpoint", "checkpoint_sha256", "dataroot", "version", "split", "limit", "corruption", "severity")
    for d in eval_dirs.values():
        m = json.loads((Path(d) / "metrics.json").read_text())
        this = {k: m.get(k) for k in keys}
        if this["split"] != split:
            raise ValueError(f"oracle: {d} was evaluated on split {this['split']!r}, not {split!r}")
        if source and {k: v for k, v in this.items() if k != "checkpoint"} != \
                {k: v for k, v in source.items() if k != "checkpoint"}:
            raise ValueError(f"oracle: {d} was evaluated with another checkpoint, data or --limit than the others "
                             f"({this} vs {source})")
        source = source or this
    if full not in eval_dirs:
        raise ValueError(f"oracle: full fusion {full!r} is not among the configurations ({', '.join(eval_dirs)})")
    tokens = [r["sample_token"] for r in load_run(eval_dirs[full]).records]
    gt = load_ground_truth(nusc, split, tokens)
    merged, choices = oracle_results(eval_dirs, gt, threshold, full, keep=detections_filter(nusc))

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "choices.jsonl", "w") as f:
        f.writelines(json.dumps(c) + "\n" for c in choices)
    path = write_results(out / "results.json", merged, {s: any(c[s] != "off" for c in choices) for s in SENSORS})
    groups = frame_groups(choices, empty_max, dense_min)
    oracle = official_eval(nusc, path, split, out / "devkit", groups)
    reference = official_eval(nusc, Path(eval_dirs[full]) / "results.json", split, out / "devkit_full", groups)

    by_token = {c["sample_token"]: c for c in choices}
    members = {"overall": choices, **{g: [by_token[t] for t in ts] for g, ts in groups.items()}}
    configs = static_order(eval_dirs)
    metrics = {
        **oracle["overall"],
        "per_condition": oracle["subsets"],
        "cost_per_frame": stats(c["cost"] for c in choices),
        "gflops_per_frame": stats(c["gflops"] for c in choices),
        "latency_ms": stats(c["latency_ms"] for c in choices),
        "full": {"config": full, **reference["overall"], "per_condition": reference["subsets"],
                 "gflops_per_frame": stats(c["full_gflops"] for c in choices),
                 "latency_ms": stats(c["full_latency_ms"] for c in choices)},
        "per_group": {g: {"frames": len(cs), "gflops_per_frame": stats(c["gflops"] for c in cs),
                          "latency_ms": stats(c["latency_ms"] for c in cs),
                          "full_gflops_per_frame": stats(c["full_gflops"] for c in cs),
                          "full_latency_ms": stats(c["full_latency_ms"] for c in cs),
                          "selection": selection(cs),
                          "configs": {k: sum(c["config"] == k for c in cs) / len(cs) for k in configs}}
                      for g, cs in members.items()},
        "score_threshold": threshold, "max_dist": MAX_DIST, "empty_max": empty_max, "dense_min": dense_min,
        "frames": len(choices), "configs": configs, "eval_dirs": {c: str(eval_dirs[c]) for c in configs},
        **source,
    }
    write_json(out / "metrics.json", metrics)
    return metrics
