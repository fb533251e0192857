"""Official nuScenes evaluation of gatefusion detections.

Detections (ego frame, project box layout) -> official results JSON (global frame, devkit layout) -> the devkit's
own DetectionEval (NDS, mAP, TP errors), overall and on subsets of frames (per condition, frames with a sensor
fault). `run_model` runs any detector with a `detect(batch, sensors, budget, price)` method over a DataLoader at any
batch size, measuring latency at batch size 1 and counting FLOPs on a sample of its frames.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Collection
from unittest import mock

import numpy as np
import torch

from sensors.frame import Detections, FrameMeta
from sensors.geometry import box_to_nuscenes
from sensors.names import ATTRIBUTES, CLASSES, CONDITIONS

MAX_BOXES_PER_SAMPLE = 500


def detections_to_results(detections: list[Detections], metas: list[FrameMeta]) -> dict[str, list[dict]]:
    """One entry per sample token: at most 500 boxes, best first, in global coordinates (devkit layout)."""
    results: dict[str, list[dict]] = {}
    for det, meta in zip(detections, metas):
        if not meta.global_T_ego:
            raise ValueError(f"frame {meta.sample_token} has no global_T_ego; cannot write global boxes")
        global_T_ego = np.asarray(meta.global_T_ego, dtype=np.float64)
        order = torch.argsort(det.scores, descending=True)[:MAX_BOXES_PER_SAMPLE].cpu()
        boxes = det.boxes.detach().cpu().double().numpy()
        scores, labels = det.scores.detach().cpu(), det.labels.detach().cpu()
        attrs = det.attributes.detach().cpu()
        rows = []
        for i in order.tolist():
            row = {"sample_token": meta.sample_token, **box_to_nuscenes(boxes[i], global_T_ego)}
            row["detection_name"] = CLASSES[int(labels[i])]
            row["detection_score"] = float(scores[i])
            row["attribute_name"] = ATTRIBUTES[int(attrs[i])] if int(attrs[i]) >= 0 else ""
            rows.append(row)
        results[meta.sample_token] = rows
    return results


def write_results(path: str | Path, results: dict[str, list[dict]], modalities: dict[str, bool]) -> Path:
    """Write the official results JSON (`meta` says which modalities were used)."""
    meta = {"use_camera": False, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
    meta.update({f"use_{k}": bool(v) for k, v in modalities.items()})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}))
    return path


def _summary(metrics) -> dict:
    s = metrics.serialize()
    return {
        "nds": float(s["nd_score"]),
        "map": float(s["mean_ap"]),
        "tp_errors": {k: float(v) for k, v in s["tp_errors"].items()},
        "per_class_ap": {k: float(v) for k, v in s["mean_dist_aps"].items()},
        "per_class_tp_errors": {c: {k: float(v) for k, v in e.items()} for c, e in s["label_tp_errors"].items()},
    }


@contextmanager
def _empty_predictions_allowed():
    """The devkit's filter_eval_boxes asserts on a set without a single box, so DetectionEval cannot be built on
    results without any detection (an untrained model, every score under the threshold). Filtering no boxes gives
    no boxes: inside this context such a set passes through unfiltered, every other set (the ground truth) goes
    through the devkit's filter, and the devkit's own metrics then score the empty predictions (AP 0, NDS 0)."""
    import nuscenes.eval.detection.evaluate as devkit_evaluate
    original = devkit_evaluate.filter_eval_boxes

    def filter_eval_boxes(nusc, eval_boxes, *args, **kwargs):
        return eval_boxes if not eval_boxes.all else original(nusc, eval_boxes, *args, **kwargs)

    with mock.patch.object(devkit_evaluate, "filter_eval_boxes", filter_eval_boxes):
        yield


def official_eval(nusc, result_path: str | Path, split: str, out_dir: str | Path,
                  subsets: dict[str, list[str]] | None = None) -> dict:
    """DetectionEval (detection_cvpr_2019) on `split`, on the frames in the results file only, and on each subset.

    The devkit requires every sample of the split in the results; samples that were not run (an evaluation limited
    to a few frames) are filled with no boxes and then left out of every metric. Returns
    {"overall": summary, "subsets": {name: summary | None}} where a summary has nds, map, tp_errors, per_class_ap,
    per_class_tp_errors and frames.
    """
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import get_samples_of_custom_split
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.utils.splits import create_splits_scenes, is_predefined_split

    result_path = Path(result_path)
    data = json.loads(result_path.read_text())
    if is_predefined_split(split_name=split):
        scenes = set(create_splits_scenes()[split])
        split_tokens = [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in scenes]
    else:
        split_tokens = get_samples_of_custom_split(split_name=split, nusc=nusc)
    run_tokens = [t for t in split_tokens if t in data["results"]]
    if not run_tokens:
        raise ValueError(f"{result_path}: no sample of split '{split}' in the results")
    if len(run_tokens) < len(split_tokens):
        data["results"] = {t: data["results"].get(t, []) for t in split_tokens}
        result_path = result_path.with_name(result_path.stem + "_filled.json")
        result_path.write_text(json.dumps(data))

    empty = not any(data["results"][t] for t in run_tokens)
    if empty:
        warnings.warn(f"{result_path}: no detection in any frame; every metric is that of an empty result (NDS 0)")
    with _empty_predictions_allowed() if empty else nullcontext():
        ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(result_path), eval_set=split,
                           output_dir=str(out_dir), verbose=False)
    gt_all, pred_all = ev.gt_boxes, ev.pred_boxes

    def evaluate_on(tokens: list[str]) -> dict | None:
        tokens = [t for t in tokens if t in gt_all.sample_tokens]
        if not tokens:
            return None
        ev.gt_boxes, ev.pred_boxes = EvalBoxes(), EvalBoxes()
        for t in tokens:
            ev.gt_boxes.add_boxes(t, gt_all[t])
            ev.pred_boxes.add_boxes(t, pred_all[t])
        ev.sample_tokens = tokens
        metrics, _ = ev.evaluate()
        return {**_summary(metrics), "frames": len(tokens)}

    out = {"overall": evaluate_on(run_tokens), "subsets": {}}
    out["overall"]["motion"] = motion_errors(gt_all, pred_all, run_tokens)
    for name, tokens in (subsets or {}).items():
        out["subsets"][name] = evaluate_on(tokens)
    return out


def motion_errors(gt_boxes, pred_boxes, tokens: list[str], dist_th: float = 2.0, min_score: float = 0.3,
                  moving: float = 1.0) -> dict:
    """Velocity and heading errors of the detections above `min_score`, matched as the devkit matches (per class,
    greedily by score, to the nearest unmatched ground-truth centre within `dist_th` m; devkit EvalBoxes in), next to
    what predicting zero velocity would score on the same matches; also on the moving objects alone (|v| >
    `moving` m/s). Heading (classes other than barrier and cone, whose heading the devkit scores modulo pi or not at
    all): mean absolute error and the share of matches pointing backwards (error over 90 degrees), also on the
    moving objects alone, whose velocity shows where their front is, and on the others (still)."""
    from nuscenes.eval.common.utils import center_distance, velocity_l2, yaw_diff

    vel, zero, heading, heading_speed = [], [], [], []  # zero: what zero velocity scores, the object's speed
    for t in tokens:
        preds = sorted((b for b in pred_boxes[t] if b.detection_score >= min_score), key=lambda b: -b.detection_score)
        taken = set()
        for p in preds:
            cands = [(center_distance(g, p), i) for i, g in enumerate(gt_boxes[t])
                     if i not in taken and g.detection_name == p.detection_name]
            d, i = min(cands, default=(np.inf, -1))
            if d > dist_th:
                continue
            taken.add(i)
            g = gt_boxes[t][i]
            if g.detection_name != "traffic_cone" and not np.any(np.isnan(g.velocity)):
                vel.append(velocity_l2(g, p))
                zero.append(float(np.linalg.norm(g.velocity)))
            if g.detection_name not in ("barrier", "traffic_cone"):
                heading.append(yaw_diff(g, p))
                heading_speed.append(0.0 if np.any(np.isnan(g.velocity)) else float(np.linalg.norm(g.velocity)))

    def mean(a):
        return float(np.mean(a)) if len(a) else float("nan")

    vel, zero, heading, heading_speed = map(np.asarray, (vel, zero, heading, heading_speed))
    fast, moves = zero > moving, heading_speed > moving
    moving_heading, still_heading = heading[moves], heading[~moves]
    return {"matches": int(len(vel)), "vel_err": mean(vel), "vel_err_zero": mean(zero),
            "moving_matches": int(fast.sum()), "moving_vel_err": mean(vel[fast]),
            "moving_vel_err_zero": mean(zero[fast]), "heading_err": mean(heading),
            "heading_backwards": mean(heading > np.pi / 2),
            "moving_heading_matches": int(len(moving_heading)), "moving_heading_err": mean(moving_heading),
            "moving_heading_backwards": mean(moving_heading > np.pi / 2),
            "still_heading_matches": int(len(still_heading)),
            "still_heading_backwards": mean(still_heading > np.pi / 2)}


def condition_subsets(metas: list[FrameMeta]) -> dict[str, list[str]]:
    """Frames grouped by condition tag (sensors.names CONDITIONS) and by sensor fault (fault, no-fault)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for m in metas:
        for tag in m.conditions:
            if tag in CONDITIONS:
                groups[tag].append(m.sample_token)
        groups["fault" if m.faults else "no-fault"].append(m.sample_token)
    order = list(CONDITIONS) + ["fault", "no-fault"]
    return {k: groups[k] for k in order if groups.get(k)}


PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def autocast(device: torch.device | str, precision: str = "32"):
    """The context model.detect runs in at `precision` (PRECISIONS): nothing for "32", torch.autocast on CUDA for the
    mixed ones. ValueError for an unknown precision, or a mixed one off CUDA (autocast on the CPU is not used)."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if PRECISIONS[precision] is None:
        return nullcontext()
    if torch.device(device).type != "cuda":
        raise ValueError(f"--precision {precision} is mixed precision on CUDA; on {torch.device(device).type} "
                         f"evaluate with --precision 32")
    return torch.autocast("cuda", dtype=PRECISIONS[precision])


def spread(total: int, frames: int | None) -> set[int] | None:
    """Positions of min(frames, total) frames evenly spread over `total` (None: every frame)."""
    if frames is None:
        return None
    n = max(0, min(frames, total))
    return {int(i * total / n) for i in range(n)}


@torch.no_grad()
def run_model(model, loader, sensors=None, device: torch.device | str = "cpu", warmup: int = 2,
              limit: int | None = None, budget: float | None = None, price: float = 0.0,
              measure: Collection[int] | None = None, control: float = 0.0, precision: str = "32",
              progress: bool = False):
    """Run `model.detect(batch, sensors, budget, price)` over `loader` (in `precision`, see `autocast`).

    Returns (detections, records, metas, measured): one entry per frame; measured holds "batch_ms" (its batch's wall
    time, host to device copy, gate, forward and decoding, divided by the batch size: the throughput side),
    "latency_ms" and "gflops" (measured on the frames whose positions are in `measure`, every frame when None; NaN
    on the others), "gt_boxes" (its number of ground-truth boxes, 0 where the split has none) and "price". A
    measured frame's latency is its own at batch size 1, the deployment case: the detection run itself when the
    loader's batches hold one frame, else the frame run again alone after its batch (`Batch.select`, copied to the
    device in the time). Its GFLOPs are counted by torch's FlopCounterMode on the frame alone after the timed run,
    so that counting never slows what is timed. The first `warmup` batches, and the first `warmup` frames run alone,
    are run twice so that one-time start-up costs are not timed. `progress`: a tqdm bar with frames/s on stderr.

    With a budget and `control` > 0, the price is also steered as the frames stream, as a deployed system would keep
    its mean cost at the budget: after each batch, price += control * (the batch's mean cost - budget) (records'
    cost, the latency table's fraction of full). It uses no label and nothing of a frame before it is processed;
    each record keeps the price it ran at."""
    from tqdm import tqdm

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(batch, price: float, warm: bool):
        with autocast(device, precision):
            if warm:
                model.detect(batch.to(device), sensors, budget, price)
            sync()
            t0 = time.perf_counter()
            moved = batch.to(device)
            out = model.detect(moved, sensors, budget, price)
            sync()
        return (time.perf_counter() - t0) * 1000.0, moved, out

    detections, records, metas, measured = [], [], [], []
    total = len(loader.dataset) if hasattr(loader, "dataset") else None
    bar = tqdm(total=min(total, limit) if total is not None and limit is not None else total, unit="frame",
               disable=not progress, smoothing=0.1)
    alone = 0  # frames run alone so far (batches of more than one frame)
    for i, batch in enumerate(loader):
        if limit is not None and len(metas) >= limit:
            break
        ms, moved, (dets, recs) = timed(batch, price, warm=i < warmup)
        used_price = price
        if budget is not None and control > 0:
            price += control * (sum(r.cost for r in recs) / len(recs) - budget)
        detections += [Detections(d.boxes.float().cpu(), d.scores.float().cpu(), d.labels.cpu(), d.attributes.cpu())
                       for d in dets]
        records += recs
        metas += batch.meta
        for b in range(len(batch)):
            x = {"batch_ms": ms / len(batch), "latency_ms": float("nan"), "gflops": float("nan"),
                 "gt_boxes": int(len(batch.gt[b].boxes)), "price": used_price}
            if measure is None or len(measured) in measure:
                frame = moved.select(torch.tensor([b]))
                if len(batch) == 1:
                    x["latency_ms"] = ms
                else:
                    x["latency_ms"] = timed(batch.select(torch.tensor([b])), used_price, warm=alone < warmup)[0]
                    alone += 1
                with autocast(device, precision):
                    x["gflops"] = frame_gflops(model, frame, sensors, budget, used_price)
            measured.append(x)
        bar.update(len(batch))
    bar.close()
    return detections, records, metas, measured


def frame_gflops(model, frame, sensors=None, budget: float | None = None, price: float = 0.0) -> float:
    """GFLOPs of `model.detect` on a one-frame Batch, counted by torch's FlopCounterMode (convolutions, linear
    layers, matmuls; not grid_sample, scatter or norms, whose time the latency table and the measured ms carry)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.detect(frame, sensors, budget, price)
    return counter.get_total_flops() / 1e9


def selection_stats(records, metas: list[FrameMeta], measured: list[dict], empty_max: int = 5,
                    dense_min: int = 20, ground_truth: bool = True) -> dict:
    """How often each sensor ran in each mode, overall and per condition (the conditions of condition_subsets, plus,
    with `ground_truth`, "empty" (at most `empty_max` ground-truth boxes) and "dense" (at least `dense_min`)
    traffic), and the mean and p95 per frame of the cost (fraction of full, by the model's latency table), GFLOPs and
    ms (over the frames they were measured on)."""
    from sensors.names import MODES, SENSORS

    groups = condition_subsets(metas)
    index = {m.sample_token: i for i, m in enumerate(metas)}
    frames = {"all": list(range(len(metas))), **{k: [index[t] for t in v] for k, v in groups.items()}}
    if ground_truth:
        frames["empty"] = [i for i, x in enumerate(measured) if x["gt_boxes"] <= empty_max]
        frames["dense"] = [i for i, x in enumerate(measured) if x["gt_boxes"] >= dense_min]

    def stats(values: list[float]) -> dict:  # NaN: measured on none of the frames (--measure-frames)
        a = np.asarray(values, dtype=np.float64)
        if not len(a) or np.isnan(a).all():
            return {"mean": float("nan"), "p95": float("nan")} if len(a) else {}
        return {"mean": float(np.nanmean(a)), "p95": float(np.nanpercentile(a, 95))}

    out = {}
    for name, rows in frames.items():
        if not rows:
            continue
        out[name] = {
            "frames": len(rows),
            "selection": {s: {m: sum(getattr(records[i], s) == m for i in rows) / len(rows) for m in MODES[s]}
                          for s in SENSORS},
            "cost": stats([records[i].cost for i in rows]),
            "gflops": stats([measured[i]["gflops"] for i in rows]),
            "latency_ms": stats([measured[i]["latency_ms"] for i in rows]),
        }
    return out


def latency_stats(latencies_ms: list[float]) -> dict:
    """Mean, p50, p95 and frames/s of the frames whose latency was measured (the others are NaN); NaN if none was."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    a = a[~np.isnan(a)]
    if not len(a):
        return {"mean": float("nan"), "p50": float("nan"), "p95": float("nan"), "fps": float("nan")}
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "fps": float(1000.0 / a.mean())}


def write_json(path: str | Path, obj) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
