"""Official nuScenes evaluation of gatefusion detections.

Detections (ego frame, project box layout) -> official results JSON (global frame, devkit layout) -> the devkit's
own DetectionEval (NDS, mAP, TP errors), overall and on subsets of frames (per condition, frames with a sensor
fault). `run_model` runs any detector with a `detect(batch, sensors)` method over a DataLoader, timing each batch.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from sensors.frame import Detections, FrameMeta
from sensors.geometry import box_to_nuscenes
from sensors.names import ATTRIBUTES, CLASSES

MAX_BOXES_PER_SAMPLE = 500
CONDITION_GROUPS = ("day", "dusk", "night", "clear", "rain", "fog")


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
    for name, tokens in (subsets or {}).items():
        out["subsets"][name] = evaluate_on(tokens)
    return out


def condition_subsets(metas: list[FrameMeta]) -> dict[str, list[str]]:
    """Frames grouped by condition tag (day/dusk/night, clear/rain/fog) and by sensor fault (fault, no-fault)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for m in metas:
        for tag in m.conditions:
            if tag in CONDITION_GROUPS:
                groups[tag].append(m.sample_token)
        groups["fault" if m.faults else "no-fault"].append(m.sample_token)
    order = list(CONDITION_GROUPS) + ["fault", "no-fault"]
    return {k: groups[k] for k in order if groups.get(k)}


@torch.no_grad()
def run_model(model, loader, sensors=None, device: torch.device | str = "cpu", warmup: int = 2,
              limit: int | None = None):
    """Run `model.detect(batch, sensors)` over `loader`.

    Returns (detections, records, metas, latencies_ms): one entry per frame; a frame's latency is its batch's
    wall time (host to device copy, forward, decoding) divided by the batch size. The first `warmup` batches are
    run twice so that one-time start-up costs are not timed.
    """
    device = torch.device(device)
    detections, records, metas, latencies = [], [], [], []
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i, batch in enumerate(loader):
        if limit is not None and len(metas) >= limit:
            break
        if i < warmup:
            model.detect(batch.to(device), sensors)
        sync()
        t0 = time.perf_counter()
        dets, recs = model.detect(batch.to(device), sensors)
        sync()
        dt = (time.perf_counter() - t0) * 1000.0 / len(batch)
        detections += [d.to("cpu") for d in dets]
        records += recs
        metas += batch.meta
        latencies += [dt] * len(batch)
    return detections, records, metas, latencies


def count_gflops(model, loader, sensors=None, device: torch.device | str = "cpu", frames: int = 8) -> float:
    """Mean GFLOPs per frame of `model.detect`, counted by torch's FlopCounterMode over up to `frames` frames."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    total, seen = 0, 0
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            for batch in loader:
                counter = FlopCounterMode(display=False)
                with counter:
                    model.detect(batch.to(device), sensors)
                total += counter.get_total_flops()
                seen += len(batch)
                if seen >= frames:
                    break
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return total / max(seen, 1) / 1e9


def latency_stats(latencies_ms: list[float]) -> dict:
    a = np.asarray(latencies_ms, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "fps": float(1000.0 / a.mean())}


def write_json(path: str | Path, obj) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)
