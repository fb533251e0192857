"""Reading an eval.py run and scoring its frames: Run and load_run (metrics.json, results.json, records.jsonl),
ego_detections (devkit result boxes into the ego frame), gate_probabilities (a record's gate_probs), and
match_frame, which gives each frame's detection quality (FrameQuality).

Per-frame detection quality follows the devkit's matching at its loosest threshold, 2 m: per class, detections in
descending score take the nearest unmatched ground-truth box whose centre is within 2 m in x-y; boxes beyond the
class's evaluation range (detection_cvpr_2019) and ground truth without a LiDAR or radar point are left out, as the
devkit filters them. Only detections with score >= a threshold count (AP integrates over all scores; one frame's
picture needs one cut).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sensors.geometry import box_from_nuscenes, invert
from sensors.names import CLASSES

MATCH_DISTANCE = 2.0


# ----------------------------------------------------------------------------------------------- reading a run

@dataclass
class Run:
    """An eval.py output folder. results: sample_token -> devkit boxes (global frame); records: one dict per frame
    in the order evaluated (sample_token, scene, camera, lidar, radar, gflops, latency_ms, detections, conditions,
    faults, and gate_probs where a gate chose)."""

    path: Path
    metrics: dict
    results: dict[str, list[dict]]
    records: list[dict]

    def scenes(self) -> dict[str, list[dict]]:
        """Records grouped by scene, scenes in order of first appearance."""
        out: dict[str, list[dict]] = {}
        for r in self.records:
            out.setdefault(r.get("scene", "?"), []).append(r)
        return out


def load_run(path: str | os.PathLike) -> Run:
    """Read metrics.json, results.json and records.jsonl of an eval.py run; ValueError naming what is missing."""
    path = Path(path)
    missing = [n for n in ("metrics.json", "results.json", "records.jsonl") if not (path / n).is_file()]
    if missing:
        raise ValueError(f"{path} is not an eval.py output folder: no {', '.join(missing)}")
    records = [json.loads(line) for line in (path / "records.jsonl").read_text().splitlines() if line.strip()]
    return Run(path, json.loads((path / "metrics.json").read_text()),
               json.loads((path / "results.json").read_text())["results"], records)


def ego_detections(rows: list[dict], global_T_ego, min_score: float = 0.0) -> dict[str, np.ndarray]:
    """Devkit result boxes (global) with score >= min_score -> boxes (P, 9) in the ego frame, labels, scores."""
    rows = [r for r in rows if r["detection_score"] >= min_score]
    ego_T_global = invert(np.asarray(global_T_ego, dtype=np.float64))
    boxes = [box_from_nuscenes(r["translation"], r["size"], r["rotation"], r.get("velocity", (0, 0)), ego_T_global)
             for r in rows]
    return {"boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 9),
            "labels": np.array([CLASSES.index(r["detection_name"]) for r in rows], dtype=np.int64),
            "scores": np.array([r["detection_score"] for r in rows], dtype=np.float64)}


def gate_probabilities(record: dict, modes: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """A record's gate_probs as {sensor: (n_modes,) probabilities in `modes` order}; {} for a static configuration.
    Accepts {sensor: [p, ...]} (modes order) or {sensor: {mode: p}}."""
    out = {}
    for s, p in (record.get("gate_probs") or {}).items():
        out[s] = np.array([p.get(m, 0.0) for m in modes[s]] if isinstance(p, dict) else p, dtype=np.float64)
    return out


# ----------------------------------------------------------------------------------------------- quality

@dataclass
class FrameQuality:
    """Matching of one frame's detections to its ground truth (the devkit's 2 m centre-distance rule).

    gt_status:   (K,) 1 matched, 0 missed, -1 left out (beyond the class range, or no LiDAR/radar point)
    pred_status: (P,) 1 matched, 0 false positive, -1 left out (beyond the class range)
    """

    gt_status: np.ndarray
    pred_status: np.ndarray

    @property
    def gt(self) -> int:
        return int((self.gt_status >= 0).sum())

    @property
    def matched(self) -> int:
        return int((self.gt_status == 1).sum())

    @property
    def false_positives(self) -> int:
        return int((self.pred_status == 0).sum())

    @property
    def recall(self) -> float:
        return self.matched / self.gt if self.gt else float("nan")


def class_ranges() -> np.ndarray:
    """(10,) evaluation range in metres per CLASSES entry, from the devkit's detection_cvpr_2019 config."""
    from nuscenes.eval.detection.config import config_factory

    ranges = config_factory("detection_cvpr_2019").class_range
    return np.array([ranges[c] for c in CLASSES], dtype=np.float64)


def match_frame(pred: dict[str, np.ndarray], gt_boxes, gt_labels, gt_num_pts=None, ranges=None,
                distance: float = MATCH_DISTANCE) -> FrameQuality:
    """Greedy matching as the devkit's accumulate does: per class, detections by descending score each take the
    nearest free ground-truth box of the class if its x-y centre distance is < `distance`."""
    ranges = class_ranges() if ranges is None else ranges
    gt_boxes, gt_labels = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 9), np.asarray(gt_labels)
    gt_in = np.linalg.norm(gt_boxes[:, :2], axis=1) < ranges[gt_labels]
    if gt_num_pts is not None:
        gt_in &= np.asarray(gt_num_pts) > 0
    pred_in = np.linalg.norm(pred["boxes"][:, :2], axis=1) < ranges[pred["labels"]]
    gt_status, pred_status = np.where(gt_in, 0, -1), np.where(pred_in, 0, -1)
    for i in np.argsort(-pred["scores"], kind="stable"):
        if not pred_in[i]:
            continue
        free = np.flatnonzero((gt_status == 0) & (gt_labels == pred["labels"][i]))
        if len(free):
            d = np.linalg.norm(gt_boxes[free, :2] - pred["boxes"][i, :2], axis=1)
            if d.min() < distance:
                gt_status[free[d.argmin()]], pred_status[i] = 1, 1
    return FrameQuality(gt_status, pred_status)
