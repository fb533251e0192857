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

With a budget b (a gated checkpoint), the gate's mean error per configuration (measured minus predicted detection
loss) is first measured on `gate_offsets` frames of the training split and removed, then the price that makes the
gate's mean cost b x full is calibrated on `calibration_frames` frames of it (fusion/gate.py calibrate_price), never
on the split evaluated, unless `price` gives the price or `operating_point` an earlier run's price and offsets (as
bench/robustness.py keeps the clean run's under corruption).
"""
from __future__ import annotations

import hashlib
import json
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_OFFSET_FRAMES = 48  # training frames the gate's mean error per configuration is measured on (gate_offsets)


@dataclass
class Evaluation:
    """What to evaluate and how; every field is one eval.py flag (same name, dashes for underscores).

    sensors: a static configuration such as "camera=low,lidar=off,radar=on" (None: the checkpoint's own), or budget:
    the gate chooses per frame at this mean cost, a fraction of the full configuration's; with a budget, price /
    operating_point (an earlier run's metrics.json) / gate_offsets (frames; None: DEFAULT_OFFSET_FRAMES, 0: not) /
    calibration_frames set its operating point and budget_control steers the price as frames stream.
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
        if self.budget is None and (self.gate_offsets is not None or self.operating_point):
            raise ValueError("--gate-offsets and --operating-point set the gate's operating point: they need --budget")
        if self.operating_point and (self.price is not None or self.gate_offsets is not None):
            raise ValueError("--operating-point gives the price and the gate offsets: it cannot be combined with "
                             "--price or --gate-offsets")


# ----------------------------------------------------------------------------------------------- checkpoints

def known_hyperparameters() -> set[str] | None:
    """Names GateFusionModule accepts: its constructor's, plus build_detector's when it takes **kwargs (passed on to
    build_detector by name); None when that set cannot be told from the signatures."""
    import inspect

    from fusion.detector import build_detector
    from fusion.module import GateFusionModule

    names: set[str] = set()
    for fn in (GateFusionModule.__init__, build_detector):
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if all(p.kind is not p.VAR_KEYWORD for p in params):
            return names
    return None


def _few(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_checkpoint(path: str | Path, map_location="cpu"):
    """A GateFusionModule from a Lightning checkpoint (weights_only loading), and the data settings it was trained
    with. Raises ValueError naming the file when it is missing, corrupt, not a gatefusion checkpoint (its weights
    are not all under "detector.") or from another version (hyperparameters the module does not know, weights
    that do not fit the module they describe). Every other error while building the module propagates: it is a
    bug, not a bad file."""
    from fusion.module import GateFusionModule

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"checkpoint {path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    needed = ("state_dict", "hyper_parameters", "pytorch-lightning_version")
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in needed) or not isinstance(ckpt["state_dict"], dict):
        raise ValueError(f"checkpoint {path}: not a Lightning checkpoint (no {' / '.join(needed)})")
    weights, hparams = ckpt["state_dict"], dict(ckpt["hyper_parameters"] or {})
    foreign = [k for k in weights if not k.startswith(("detector.", "gate."))]
    if not weights or foreign:
        raise ValueError(f"checkpoint {path}: not a gatefusion checkpoint (a GateFusionModule's weights are all under "
                         f"'detector.' and 'gate.'; this one has {_few(foreign) if foreign else 'no weights'})")
    known = known_hyperparameters()
    unknown = [k for k in hparams if not k.startswith("_") and known is not None and k not in known]
    if unknown:
        raise ValueError(f"checkpoint {path}: a gatefusion checkpoint from another version: unknown hyperparameters "
                         f"{_few(unknown, 6)}")
    try:
        model = GateFusionModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):
            raise
        expected = GateFusionModule(**{k: v for k, v in hparams.items() if not k.startswith("_")}).state_dict()
        missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
        shape = [k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
        what = [f"{name} {_few(keys)}" for name, keys in (("missing", missing), ("unexpected", unexpected),
                                                          ("wrong shape", shape)) if keys]
        raise ValueError(f"checkpoint {path}: a gatefusion checkpoint from another version: missing/unexpected "
                         f"weights: {'; '.join(what) or e}") from None
    return model, dict(ckpt.get("datamodule_hyper_parameters") or {})


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: which weights gave a metrics.json, whatever the checkpoint was later renamed to."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- the run

def evaluate(ev: Evaluation) -> dict:
    """Run the evaluation `ev`: load its checkpoint, set the gate's operating point (with a budget), run the model
    over the split, score with the devkit, write results.json, metrics.json and records.jsonl into ev.out, and return
    the metrics (metrics.json's content; not scored without ev.score). ValueError for a bad combination,
    checkpoint, dataroot, corruption or precision."""
    from torch.utils.data import DataLoader, Subset

    import datasets.evaluation as evaluation
    from datasets.nuscenes import NuScenesDataset
    from fusion.detector import SensorConfig
    from sensors.corruptions import Corruption
    from sensors.frame import collate
    from sensors.names import IMAGE_SIZE

    ev.check()
    corruption = Corruption(ev.corruption, ev.severity) if ev.corruption else None
    device = torch.device("cuda" if ev.device == "auto" and torch.cuda.is_available() else
                          "cpu" if ev.device == "auto" else ev.device)
    evaluation.autocast(device, ev.precision)  # refused here, before anything loads
    model, data_hp = load_checkpoint(ev.ckpt)
    if ev.doppler_velocity is not None:
        try:
            model.detector.set_doppler_velocity(ev.doppler_velocity)
        except ValueError as e:
            raise ValueError(f"{ev.ckpt}: --doppler-velocity: {e}") from None
    model = model.to(device).eval()
    sensors = SensorConfig.parse(ev.sensors) if ev.sensors else None
    settings = dict(lidar_sweeps=data_hp.get("lidar_sweeps", 3), radar_sweeps=data_hp.get("radar_sweeps", 3),
                    image_size=tuple(data_hp.get("image_size", IMAGE_SIZE)), cache_dir=ev.cache_dir)
    dataset = NuScenesDataset(ev.dataroot, ev.version, ev.split, augment=corruption,
                              stale_readings=bool(corruption and corruption.spec.needs_stale), **settings)
    if ev.limit is not None:
        dataset = Subset(dataset, range(min(ev.limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=ev.batch_size, num_workers=ev.num_workers, collate_fn=collate)
    if ev.budget is not None and model.gate is None:
        raise ValueError(f"--budget: checkpoint {ev.ckpt} has no gate (trained with gate: false)")
    price = set_operating_point(ev, model, data_hp, settings, device) if ev.budget is not None else ev.price

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

def set_operating_point(ev: Evaluation, model, data_hp: dict, settings: dict, device) -> float:
    """The gate's price at ev.budget, its offsets set into model.gate: both from ev.operating_point, or the offsets
    measured (regression gates) and the price calibrated on the checkpoint's training split unless ev.price gives
    it."""
    from datasets.nuscenes import NuScenesDataset

    if ev.operating_point:
        price, offset = operating_point(ev.operating_point, ev.budget, ev.ckpt)
        model.gate.offset.copy_(offset)
        return price
    offset_frames = DEFAULT_OFFSET_FRAMES if ev.gate_offsets is None else ev.gate_offsets
    train_split = data_hp.get("train_split", "train")
    train = NuScenesDataset(ev.dataroot, ev.version, train_split, **settings)
    if offset_frames and model.gate.estimator == "regression":
        model.gate.offset.copy_(gate_offsets(model, train, offset_frames, device, ev.num_workers))
        print(f"gate offsets (measured - predicted loss per configuration) from {offset_frames} frames of "
              f"{train_split}: " + ", ".join(f"{float(o):+.3f}" for o in model.gate.offset))
    if ev.price is not None:
        return ev.price
    price = calibrate(model, train, ev.budget, ev.calibration_frames, device, ev.num_workers)
    print(f"budget {ev.budget}: price {price:.4f}, calibrated on {min(ev.calibration_frames, len(train))} "
          f"frames of {train_split}")
    return price


def evenly_spread(dataset, frames: int):
    """A Subset of min(frames, len(dataset)) frames of `dataset`, evenly spread over it."""
    from torch.utils.data import Subset

    n = min(frames, len(dataset))
    return Subset(dataset, [int(i * len(dataset) / n) for i in range(n)])


def gate_offsets(model, dataset, frames: int, device, num_workers: int = 0) -> torch.Tensor:
    """(K,) the gate's mean error per configuration, measured minus predicted detection loss, over the frames with
    every sensor present among `frames` frames of `dataset` (evenly spread; the training split)."""
    from torch.utils.data import DataLoader

    from sensors.frame import collate

    subset = evenly_spread(dataset, frames)
    errors = []
    with torch.no_grad():
        for batch in DataLoader(subset, batch_size=1, num_workers=num_workers, collate_fn=collate):
            batch = batch.to(device)
            if bool(batch.present.all()):
                errors.append(model.configuration_losses(batch) - (model.gate.risk(batch) - model.gate.offset))
    if not errors:
        raise ValueError(f"--gate-offsets: none of {len(subset)} training frames has every sensor")
    return torch.cat(errors).mean(0)


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


def calibrate(model, dataset, budget: float, frames: int, device, num_workers: int = 0) -> float:
    """The price at which the gate's mean cost over `frames` frames of `dataset` (evenly spread; the training split)
    is `budget` x full: only the gate runs on them."""
    from torch.utils.data import DataLoader

    from fusion.gate import calibrate_price
    from sensors.frame import collate

    if min(frames, len(dataset)) < 1:
        raise ValueError(f"--calibration-frames must be >= 1 and the training split non-empty (got {frames}, "
                         f"{len(dataset)} frames)")
    subset = evenly_spread(dataset, frames)
    logits = []
    with torch.no_grad():
        for batch in DataLoader(subset, batch_size=8, num_workers=num_workers, collate_fn=collate):
            batch = batch.to(device)
            logits.append(model.gate(batch, torch.full((len(batch),), budget, device=device)))
    return calibrate_price(model.gate, torch.cat(logits), budget)


# ----------------------------------------------------------------------------------------------- reading runs back

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
