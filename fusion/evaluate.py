"""One evaluation of a gatefusion checkpoint on a nuScenes-format dataroot, as a library: `Evaluation` describes it,
`evaluate` runs it, writes its files and returns its metrics. eval.py parses flags into an Evaluation; the benches
build theirs directly.

Files written into Evaluation.out: results.json (official nuScenes results format), metrics.json (NDS, mAP, per-class
AP and TP errors from the devkit's DetectionEval, overall and per condition; `motion`: the velocity and heading errors
of the matched detections above score 0.3 beside zero velocity's on the same matches; GFLOPs per frame counted by
torch's FLOP counter and latency mean/p50/p95 and frames/s at batch size 1 on this device, both on `measure_frames`
frames evenly spread over the split (every frame by default); the throughput at the run's batch size and precision;
how often each sensor ran in each mode, overall and per condition, with the mean and p95 cost per frame) and
records.jsonl (per frame: which branches ran, their cost as a fraction of full, its counted GFLOPs and measured ms
(NaN on frames not measured), the gate's probabilities, conditions). With `score` false (a split without
annotations, such as v1.0-test) nothing is scored: results.json is the submission, and metrics.json holds what needs
no ground truth (cost, latency, throughput, selection).

With a budget b (a gated checkpoint), the gate runs at the price and offsets stored in the checkpoint at the end of
training (fusion/operating_points.py: measured on training frames, never on the split evaluated), so no training data
is needed. `calibrate_on` (a split) measures them again: the gate's mean error per configuration (measured minus
predicted detection loss) on `gate_offsets` frames, then the price that makes the gate's mean cost b x full on
`calibration_frames` frames (fusion/gate.py calibrate_price); a checkpoint without stored points is calibrated so on
its training split. `price` gives the price, `operating_point` an earlier run's price and offsets (as
bench/robustness.py keeps the clean run's under corruption).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fusion.checkpoint import file_sha256, load_checkpoint


@dataclass
class Evaluation:
    """What to evaluate and how; every field is one eval.py flag (same name, dashes for underscores).

    sensors: a static configuration such as "camera=low,lidar=off,radar=on" (None: the checkpoint's own), or budget:
    the gate chooses per frame at this mean cost, a fraction of the full configuration's; with a budget, the
    checkpoint's stored operating point is used unless price / operating_point (an earlier run's metrics.json) /
    calibrate_on (a split to measure it on) with gate_offsets (frames; None: operating_points.OFFSET_FRAMES, 0: not)
    and calibration_frames set it; budget_control steers the price as frames stream.
    corruption, severity: every frame corrupted after loading (sensors/corruptions.py). limit: only the first N frames
    of the split. doppler_velocity: decode with (or without) the radar's radial velocity along the heading, whatever
    the checkpoint was trained with. score: run the devkit's DetectionEval (false: results only, for a split without
    annotations). batch_size, num_workers, precision ("32", "16-mixed", "bf16-mixed"; mixed on CUDA only): how
    detection runs; measure_frames: latency and FLOPs measured at batch size 1 on this many frames evenly spread over
    the split (None: every frame, 0: none). progress: a progress bar with frames/s (None: when stderr is a terminal).
    """
    ckpt: str
    dataroot: str
    out: str
    version: str = "v1.0-synth"
    split: str = "synth_val"
    sensors: str | None = None
    budget: float | None = None
    calibrate_on: str | None = None
    calibration_frames: int = 200
    price: float | None = None
    gate_offsets: int | None = None
    operating_point: str | None = None
    budget_control: float = 0.0
    corruption: str | None = None
    severity: int | None = None
    limit: int | None = None
    batch_size: int = 1
    num_workers: int = 2
    device: str = "auto"
    precision: str = "32"
    measure_frames: int | None = None
    progress: bool | None = None
    score: bool = True
    per_condition: bool = True
    doppler_velocity: bool | None = None
    cache_dir: str | None = None

    def check(self) -> None:
        """ValueError naming the flags of a combination that means nothing (checked before anything loads)."""
        if self.severity is not None and not self.corruption:
            raise ValueError("--severity needs --corruption")
        if self.batch_size < 1 or (self.measure_frames is not None and self.measure_frames < 0):
            raise ValueError("--batch-size must be >= 1 and --measure-frames >= 0")
        if self.budget is not None and self.sensors:
            raise ValueError("--budget lets the gate choose; it cannot be combined with --sensors")
        if self.price is not None and self.budget is None:
            raise ValueError("--price is the gate's price at a budget: it needs --budget")
        if self.budget is None and (self.gate_offsets is not None or self.operating_point or self.calibrate_on):
            raise ValueError("--gate-offsets, --calibrate-on and --operating-point set the gate's operating point: "
                             "they need --budget")
        if self.operating_point and (self.price is not None or self.gate_offsets is not None or self.calibrate_on):
            raise ValueError("--operating-point gives the price and the gate offsets: it cannot be combined with "
                             "--price, --gate-offsets or --calibrate-on")


def resolve_device(name: str) -> torch.device:
    """The device a --device flag names: "auto" is CUDA where available, else the CPU."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def evaluate(ev: Evaluation) -> dict:
    """Run the evaluation `ev`: load its checkpoint, set the gate's operating point (with a budget), run the model
    over the split, score with the devkit, write results.json, metrics.json and records.jsonl into ev.out, and return
    the metrics (metrics.json's content; not scored without ev.score). ValueError for a bad combination,
    checkpoint, dataroot, corruption or precision."""
    from torch.utils.data import DataLoader, Subset

    import datasets.evaluation as evaluation
    from datasets.nuscenes import NuScenesDataset
    from fusion.detector import SensorConfig
    from fusion.operating_points import data_settings
    from sensors.corruptions import Corruption
    from sensors.frame import collate

    ev.check()
    corruption = Corruption(ev.corruption, ev.severity) if ev.corruption else None
    device = resolve_device(ev.device)
    evaluation.autocast(device, ev.precision)  # refused here, before anything loads
    model, data_hp = load_checkpoint(ev.ckpt)
    if ev.doppler_velocity is not None:
        try:
            model.detector.set_doppler_velocity(ev.doppler_velocity)
        except ValueError as e:
            raise ValueError(f"{ev.ckpt}: --doppler-velocity: {e}") from None
    model = model.to(device).eval()
    sensors = SensorConfig.parse(ev.sensors) if ev.sensors else None
    settings = data_settings(data_hp, ev.cache_dir)
    dataset = NuScenesDataset(ev.dataroot, ev.version, ev.split, augment=corruption,
                              stale_readings=bool(corruption and corruption.spec.needs_stale), **settings)
    if ev.limit is not None:
        dataset = Subset(dataset, range(min(ev.limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=ev.batch_size, num_workers=ev.num_workers, collate_fn=collate)
    if ev.budget is not None and model.gate is None:
        raise ValueError(f"--budget: checkpoint {ev.ckpt} has no gate (trained with gate: false)")
    price, source = (set_operating_point(ev, model, data_hp, settings, device) if ev.budget is not None
                     else (ev.price, None))

    detections, records, metas, measured = evaluation.run_model(
        model, loader, sensors, device, budget=ev.budget, price=price or 0.0, control=ev.budget_control,
        measure=evaluation.spread(len(dataset), ev.measure_frames), precision=ev.precision,
        progress=sys.stderr.isatty() if ev.progress is None else ev.progress)
    out = Path(ev.out)
    used = sensors or SensorConfig.parse(model.hparams.sensors)
    ran = {s: any(getattr(r, s) != "off" for r in records) for s in ("camera", "lidar", "radar")}
    result_path = evaluation.write_results(out / "results.json", evaluation.detections_to_results(detections, metas),
                                           ran)
    metrics = score(ev, model, result_path, records, metas, measured, used, price, device)
    metrics["operating_point"] = source
    evaluation.write_json(out / "metrics.json", metrics)
    with open(out / "records.jsonl", "w") as f:
        for rec, meta, x, det in zip(records, metas, measured, detections):
            f.write(json.dumps({"sample_token": meta.sample_token, "scene": meta.scene_name,
                                "camera": rec.camera, "lidar": rec.lidar, "radar": rec.radar, "cost": rec.cost,
                                "gflops": x["gflops"], "latency_ms": x["latency_ms"], "price": x["price"],
                                "gate_probs": rec.gate_probs,
                                "detections": int(len(det.scores)), "gt_boxes": x["gt_boxes"],
                                "conditions": list(meta.conditions), "faults": list(meta.faults)}) + "\n")
    return metrics


def score(ev: Evaluation, model, result_path: Path, records, metas, measured, used, price, device) -> dict:
    """metrics.json's content: the devkit's metrics of result_path (overall and per condition; only with ev.score),
    the measured cost, latency, throughput and selection of the run, and what was evaluated."""
    from nuscenes import NuScenes

    from datasets.evaluation import condition_subsets, latency_stats, official_eval, selection_stats
    from fusion.gate import configurations

    official = {"overall": {}, "subsets": {}}
    if ev.score:
        nusc = NuScenes(version=ev.version, dataroot=ev.dataroot, verbose=False)
        official = official_eval(nusc, result_path, ev.split, Path(ev.out) / "devkit",
                                 condition_subsets(metas) if ev.per_condition else None)
    selection = selection_stats(records, metas, measured, ground_truth=ev.score)
    batch_ms = float(np.mean([x["batch_ms"] for x in measured]))
    return {
        "scored": ev.score,
        **official["overall"],
        "per_condition": official["subsets"],
        "gflops_per_frame": selection["all"]["gflops"]["mean"],
        "latency_ms": latency_stats([x["latency_ms"] for x in measured]),
        "measured_frames": int(sum(not np.isnan(x["latency_ms"]) for x in measured)),
        "throughput": {"frames_per_s": 1000.0 / batch_ms, "batch_size": ev.batch_size, "precision": ev.precision},
        "cost_per_frame": selection["all"]["cost"],
        "selection": selection,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "sensors": "gate" if ev.budget is not None else {"camera": used.camera, "lidar": used.lidar,
                                                        "radar": used.radar},
        "budget": ev.budget, "price": price, "budget_control": ev.budget_control,
        "gate_offsets": ({str(c): float(o) for c, o in zip(configurations(), model.gate.offset)}
                         if ev.budget is not None else None),
        "latency_table_ms": model.hparams.gate_costs,
        "checkpoint": str(ev.ckpt), "checkpoint_sha256": file_sha256(ev.ckpt), "dataroot": str(ev.dataroot),
        "version": ev.version, "split": ev.split, "limit": ev.limit, "frames": len(metas),
        "corruption": ev.corruption, "severity": ev.severity,
    }


# ------------------------------------------------------------------------------------ the gate's operating point

def set_operating_point(ev: Evaluation, model, data_hp: dict, settings: dict, device) -> tuple[float, str]:
    """The gate's price at ev.budget, its offsets set into model.gate, and where they came from: ev.operating_point
    (an earlier run's metrics.json); else the checkpoint's stored operating points (fusion/operating_points.py),
    unless ev.calibrate_on or ev.gate_offsets asks to measure them again or the checkpoint has none; measuring uses
    ev.calibrate_on (default: the checkpoint's training split). ev.price, where given, replaces the price."""
    from datasets.nuscenes import NuScenesDataset
    from fusion import operating_points as op

    if ev.operating_point:
        price, offset = operating_point(ev.operating_point, ev.budget, ev.ckpt)
        model.gate.offset.copy_(offset)
        return price, f"metrics.json {ev.operating_point}"
    points = op.stored(ev.ckpt) if ev.calibrate_on is None and ev.gate_offsets is None else None
    if points is not None and not points.covers(ev.budget):
        print(f"budget {ev.budget} is outside the checkpoint's operating points ({points.budgets[0]} to "
              f"{points.budgets[-1]}): calibrating")
        points = None
    if points is not None:
        model.gate.offset.copy_(torch.tensor(points.offsets))
        if ev.price is not None:
            return ev.price, "given"
        price = points.price(ev.budget)
        print(f"budget {ev.budget}: price {price:.4f}, from the checkpoint's operating points (calibrated on "
              f"{points.calibration_frames} frames of {points.split})")
        return price, f"checkpoint ({points.split})"
    split = ev.calibrate_on or data_hp.get("train_split", "train")
    try:
        dataset = NuScenesDataset(ev.dataroot, ev.version, split, **settings)
    except ValueError as e:
        raise ValueError(f"--budget {ev.budget}: the gate's operating point is calibrated on split {split!r} "
                         f"(--calibrate-on), which this dataroot cannot give: {e}") from None
    offset_frames = op.OFFSET_FRAMES if ev.gate_offsets is None else ev.gate_offsets
    if offset_frames and model.gate.estimator == "regression":
        model.gate.offset.copy_(op.gate_offsets(model, dataset, offset_frames, device, ev.num_workers))
        print(f"gate offsets (measured - predicted loss per configuration) from {offset_frames} frames of "
              f"{split}: " + ", ".join(f"{float(o):+.3f}" for o in model.gate.offset))
    if ev.price is not None:
        return ev.price, "given"
    price = op.calibrate(model, dataset, [ev.budget], ev.calibration_frames, device, ev.num_workers)[0]
    print(f"budget {ev.budget}: price {price:.4f}, calibrated on {min(ev.calibration_frames, len(dataset))} "
          f"frames of {split}")
    return price, f"calibrated ({split})"


def operating_point(path: str | Path, budget: float, ckpt: str | Path) -> tuple[float, torch.Tensor]:
    """The price and the (K,) gate offsets of an earlier gated run (its metrics.json) of checkpoint `ckpt` at
    `budget`; ValueError naming the file when it is not one."""
    from fusion.gate import configurations

    path = Path(path)
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--operating-point {path}: cannot be read as an eval.py metrics.json ({e})") from None
    if not isinstance(m, dict) or m.get("budget") is None or m.get("price") is None:
        raise ValueError(f"--operating-point {path}: not the metrics.json of a gated run (no budget and price)")
    if m["budget"] != budget:
        raise ValueError(f"--operating-point {path}: its budget is {m['budget']}, this run's {budget}")
    if m.get("checkpoint_sha256") != file_sha256(ckpt):
        raise ValueError(f"--operating-point {path}: measured with another checkpoint ({m.get('checkpoint')})")
    names = [str(c) for c in configurations()]
    offsets = m.get("gate_offsets") or {n: 0.0 for n in names}
    if set(offsets) != set(names):
        raise ValueError(f"--operating-point {path}: gate_offsets must name the {len(names)} configurations")
    return float(m["price"]), torch.tensor([float(offsets[n]) for n in names])


def compare(out_dirs: list[str]) -> str:
    """One line per earlier evaluation's output folder: what chose, NDS, mAP, cost, GFLOPs and ms per frame, and
    each as a share of the first folder's."""
    if not out_dirs:
        raise ValueError("--compare needs eval.py output folders")
    rows = []
    for d in out_dirs:
        path = Path(d) / "metrics.json"
        if not path.is_file():
            raise ValueError(f"--compare: {path}: no such file (run eval.py --out {d} first)")
        rows.append((d, json.loads(path.read_text())))
    first = rows[0][1]
    lines = ["| run | choice | NDS | mAP | cost/frame (of full) | GFLOPs/frame | ms/frame |",
             "|---|---|---|---|---|---|---|"]
    for d, m in rows:
        choice = f"gate, budget {m['budget']}" if m.get("budget") is not None else \
            ",".join(f"{k}={v}" for k, v in m["sensors"].items())
        nan = float("nan")  # NDS and mAP of a run that was not scored (--no-score)
        share = {k: m.get(k, nan) / first.get(k, nan) if first.get(k, nan) else nan
                 for k in ("nds", "gflops_per_frame")}
        ms, ms0 = m["latency_ms"]["mean"], first["latency_ms"]["mean"]
        lines.append(f"| {d} | {choice} | {m.get('nds', nan):.4f} ({share['nds']:.2f}x) | {m.get('map', nan):.4f} | "
                     f"{m['cost_per_frame']['mean']:.3f} (p95 {m['cost_per_frame']['p95']:.3f}) | "
                     f"{m['gflops_per_frame']:.2f} ({share['gflops_per_frame']:.2f}x) | {ms:.1f} ({ms / ms0:.2f}x) |")
    return "\n".join(lines)


def format_metrics(m: dict) -> str:
    """The metrics of one evaluation as eval.py prints them."""
    corrupted = f"  corruption {m['corruption']} severity {m['severity']}" if m.get("corruption") else ""
    budget = f"  budget {m['budget']} (price {m['price']:.3f})" if m.get("budget") is not None else ""
    cost = m.get("cost_per_frame") or {}
    mo = m.get("motion")
    motion = [f"matches above score 0.3: velocity error {mo['vel_err']:.2f} m/s (zero velocity: "
              f"{mo['vel_err_zero']:.2f}), moving objects {mo['moving_vel_err']:.2f} (zero: "
              f"{mo['moving_vel_err_zero']:.2f}, {mo['moving_matches']} matches); heading error "
              f"{mo['heading_err']:.2f} rad, {mo['heading_backwards']:.0%} backwards (moving objects "
              f"{mo.get('moving_heading_backwards', float('nan')):.0%}, still ones "
              f"{mo.get('still_heading_backwards', float('nan')):.0%})"] if mo else []
    scored = f"NDS {m['nds']:.4f}  mAP {m['map']:.4f}" if "nds" in m else "not scored (results only)"
    run = m.get("throughput")
    run = f"  {run['frames_per_s']:.1f} frames/s at batch size {run['batch_size']}, {run['precision']}" if run else ""
    lines = [f"sensors {m['sensors']}  frames {m['frames']}  device {m['device']}{corrupted}{budget}",
             f"{scored}  cost/frame {cost.get('mean', float('nan')):.3f} of full "
             f"(p95 {cost.get('p95', float('nan')):.3f})  GFLOPs/frame {m['gflops_per_frame']:.2f}  "
             f"latency {m['latency_ms']['mean']:.1f} ms (p50 {m['latency_ms']['p50']:.1f}, "
             f"p95 {m['latency_ms']['p95']:.1f})  {m['latency_ms']['fps']:.1f} frames/s{run}",
             *(["  ".join(f"{k} {v:.3f}" for k, v in m["tp_errors"].items()), *motion,
                "per class AP: " + "  ".join(f"{k} {v:.3f}" for k, v in m["per_class_ap"].items())]
               if "nds" in m else [])]
    for name, s in m["per_condition"].items():
        if s:
            lines.append(f"  {name:<9} NDS {s['nds']:.4f}  mAP {s['map']:.4f}  ({s['frames']} frames)")
    if m.get("budget") is not None:
        lines.append("selection (share of frames per mode):")
        for name, sel in m["selection"].items():
            modes = "  ".join(f"{s} " + "/".join(f"{v:.2f}" for v in sel["selection"][s].values())
                              for s in sel["selection"])
            lines.append(f"  {name:<9} {modes}  cost {sel['cost']['mean']:.3f}  ({sel['frames']} frames)")
    return "\n".join(lines)
