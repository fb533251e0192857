"""Export a trained model for deployment as separate graphs, so that a runtime runs only the branches the gate chose:
`python -m fusion.export --ckpt C --out D` writes one torch.export program (`<name>.pt2`, torch.export.save) per
part and `manifest.json` describing them.

Graphs (one frame per call: decisions are per frame, so a runtime batches frames that chose alike itself):
  gate            glimpses (1, GLIMPSE_FEATURES), budget (1,), present (1, 3) bool, price () -> logits (1, K) over
                  the configurations (manifest "configurations") and decisions (1, 3) mode indices: the gate's MLP
                  and scoring (fusion/gate.py Gate.logits, decide). The glimpses are cheap statistics that
                  fusion.gate.glimpses computes from the sensor tensors; they stay outside the graph.
  camera_low/high images (1, N_cam, 3, H, W) in [0, 1], intrinsics (1, N_cam, 3, 3), ego_T_cam (1, N_cam, 4, 4),
                  valid (1, N_cam) bool -> BEV (1, C, H_bev, W_bev).
  lidar_coarse/fine, radar_on
                  points (1, P, d) padded with NaN rows -> BEV. P is fixed per graph: the mode's point budget, and
                  `pack_points` lays a frame's points out so (the encoder's own deterministic budget first, then NaN
                  padding, which the encoders drop as non-finite). With the LiDAR's motion map, a second input
                  `sweeps` (1, P_sweeps, 5) holds all the frame's points (the map reads them all, sensors/lidar.py);
                  P_sweeps is --lidar-sweep-points.
  shared          camera, lidar, radar BEVs (zeros for a sensor the frame did not run), used (1, 3) bool -> the head's
                  dense outputs (fusion/head.py CenterHead.forward). Decoding (peaks, top-k) stays in Python:
                  CenterHead.decode.

Why torch.export and not ONNX: it needs nothing beyond torch, keeps the operators the model uses (grid_sample,
scatter_reduce, index_add) without an opset question, and a program loads back with torch.export.load. The point
encoders have data-dependent sizes (which points fall inside the grid): they export with torch.export.draft_export,
which keeps those sizes symbolic and turns its one data-dependent assumption, that no frame holds more points than
the budget (true of every packed input), into a runtime assertion in the graph.

The manifest lists per graph its file, the sensor and mode, the inputs and outputs with shapes and dtypes, and the
cost: the graph's GFLOPs (counted as fusion/cost.py counts) and, where the checkpoint carries a latency table (a gated
model), its ms for that branch.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from fusion.cost import SHARED, synthetic_frame
from fusion.detector import FusionDetector
from fusion.gate import Gate, configurations, glimpses
from sensors.frame import Batch, CameraData, RadarData
from sensors.names import CLASSES, IMAGE_SIZE, LIDAR_DIMS, MODES, RADAR_DIMS, SENSORS
from sensors.points import budget_points

LOUD_LOGGERS = ("torch.export", "torch.fx.experimental.symbolic_shapes", "torch._export")


@dataclass
class GraphSpec:
    """One exported graph as the manifest describes it: inputs and outputs are name -> {"shape", "dtype"}."""

    name: str
    file: str
    sensor: str | None
    mode: str | None
    inputs: dict[str, dict]
    outputs: dict[str, dict]
    cost: dict[str, float]
    notes: str = ""


def pack_points(points: Tensor, batch_index: Tensor, batch_size: int, rows: int, budget: int | None = None) -> Tensor:
    """(N, d) points of B frames with frame index (N,) -> (B, rows, d), each frame's points in their order, then NaN
    rows. With `budget`, first the encoders' deterministic per-frame budget (sensors/points.py budget_points, as at
    inference), so that a point graph sees exactly the points its eager encoder would keep. ValueError when a frame
    has more than `rows` points left."""
    batch_index = batch_index.long()
    if budget is not None:
        keep = budget_points(batch_index, batch_size, budget, False)
        points, batch_index = points[keep], batch_index[keep]
    order = torch.argsort(batch_index, stable=True)
    points, batch_index = points[order], batch_index[order]
    counts = torch.bincount(batch_index, minlength=batch_size)
    if len(counts) > batch_size or (len(counts) and int(counts.max()) > rows):
        raise ValueError(f"pack_points: a frame has {int(counts.max())} points, the graph takes at most {rows} "
                         f"(frame indices must be < {batch_size})")
    rank = torch.arange(len(points), device=points.device) - (torch.cumsum(counts, 0) - counts)[batch_index]
    out = points.new_full((batch_size * rows, points.shape[1]), float("nan"))
    out[batch_index * rows + rank] = points
    return out.view(batch_size, rows, points.shape[1])


def _frame_index(points: Tensor) -> tuple[Tensor, Tensor]:
    """(B, P, d) packed points -> (B * P, d) points and their (B * P,) frame index."""
    B, P = points.shape[:2]
    return points.flatten(0, 1), torch.arange(B, device=points.device).repeat_interleave(P)


class GateGraph(nn.Module):
    """The gate's MLP and scoring: (glimpses, budget, present, price) -> {"logits", "decisions"}."""

    def __init__(self, gate: Gate):
        super().__init__()
        self.gate = gate

    def forward(self, g: Tensor, budget: Tensor, present: Tensor, price: Tensor) -> dict[str, Tensor]:
        logits = self.gate.logits(self.gate.scores(g), budget, present)
        return {"logits": logits, "decisions": self.gate.table[self.gate.decide(logits, price)]}


class CameraGraph(nn.Module):
    """The camera encoder at one mode: (images, intrinsics, ego_T_cam, valid) -> BEV."""

    def __init__(self, detector: FusionDetector, mode: str):
        super().__init__()
        self.encoder, self.mode = detector.camera, mode

    def forward(self, images: Tensor, intrinsics: Tensor, ego_T_cam: Tensor, valid: Tensor) -> Tensor:
        return self.encoder(CameraData(images, intrinsics, ego_T_cam, valid), self.mode)[0]


class LidarGraph(nn.Module):
    """The LiDAR encoder at one mode on packed points (and, with its motion map, all the frame's points `sweeps`)."""

    def __init__(self, detector: FusionDetector, mode: str):
        super().__init__()
        self.encoder, self.mode = detector.lidar, mode

    def forward(self, points: Tensor, sweeps: Tensor | None = None) -> Tensor:
        p, i = _frame_index(points)
        bev = self.encoder.modes[self.mode](p, i, len(points))
        if sweeps is None:
            return bev
        s, j = _frame_index(sweeps)
        return torch.cat([bev, self.encoder.motion_map(s, j, len(sweeps))], 1)


class RadarGraph(nn.Module):
    """The radar encoder on packed points."""

    def __init__(self, detector: FusionDetector):
        super().__init__()
        self.encoder = detector.radar

    def forward(self, points: Tensor) -> Tensor:
        p, i = _frame_index(points)
        return self.encoder(RadarData(p, i), len(points), "on")


class SharedGraph(nn.Module):
    """Fusion + decoder + head on the three branches' BEVs (zeros where a sensor did not run) and the (B, 3) used
    mask -> the DetectorOutput's maps by name: equal to FusionDetector.shared with None for the sensors not run
    (their fusion weight is 0)."""

    def __init__(self, detector: FusionDetector):
        super().__init__()
        self.detector = detector

    def forward(self, camera: Tensor, lidar: Tensor, radar: Tensor, used: Tensor) -> dict[str, Tensor]:
        out = self.detector.shared({"camera": camera, "lidar": lidar, "radar": radar}, used.bool())
        return {f.name: getattr(out, f.name) for f in fields(out) if getattr(out, f.name) is not None}


def describe(tensors: dict[str, Tensor]) -> dict[str, dict]:
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in tensors.items()}


@contextmanager
def quiet_export():
    """draft_export reports each data-dependent assumption as a long warning; the manifest says what they are."""
    levels = {name: logging.getLogger(name).level for name in LOUD_LOGGERS}
    for name in LOUD_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def export_graph(module: nn.Module, inputs: dict[str, Tensor], path: Path, data_dependent: bool = False):
    """torch.export (draft_export where sizes depend on the data) of `module` on keyword-free example inputs,
    saved to `path` -> the ExportedProgram."""
    args = tuple(inputs.values())
    with quiet_export(), torch.no_grad():
        program = (torch.export.draft_export if data_dependent else torch.export.export)(module.eval(), args)
    torch.export.save(program, path)
    return program


def example_inputs(detector: FusionDetector, batch: Batch, sweep_points: int) -> dict[str, dict[str, Tensor]]:
    """Graph name -> its example inputs, from a one-frame batch (its points packed as a runtime packs them)."""
    cam, lidar, radar = batch.camera, batch.lidar, batch.radar
    out: dict[str, dict[str, Tensor]] = {}
    for mode in MODES["camera"][1:]:
        out[f"camera_{mode}"] = {"images": cam.images, "intrinsics": cam.intrinsics, "ego_T_cam": cam.ego_T_cam,
                                 "valid": cam.valid.bool()}
    for mode in MODES["lidar"][1:]:
        budget = detector.lidar.modes[mode].max_points
        inputs = {"points": pack_points(lidar.points.float(), lidar.batch_index, 1, budget, budget)}
        if detector.lidar.motion:
            inputs["sweeps"] = pack_points(lidar.points.float(), lidar.batch_index, 1, sweep_points)
        out[f"lidar_{mode}"] = inputs
    budget = detector.radar.max_points
    out["radar_on"] = {"points": pack_points(radar.points.float(), radar.batch_index, 1, budget, budget)}
    return out


def graph_modules(model, detector: FusionDetector) -> dict[str, tuple[nn.Module, str | None, str | None]]:
    """Graph name -> (module, sensor, mode), the gate's first when the model has one."""
    graphs: dict[str, tuple[nn.Module, str | None, str | None]] = {}
    if model.gate is not None:
        graphs["gate"] = (GateGraph(model.gate), None, None)
    for mode in MODES["camera"][1:]:
        graphs[f"camera_{mode}"] = (CameraGraph(detector, mode), "camera", mode)
    for mode in MODES["lidar"][1:]:
        graphs[f"lidar_{mode}"] = (LidarGraph(detector, mode), "lidar", mode)
    graphs["radar_on"] = (RadarGraph(detector), "radar", "on")
    graphs["shared"] = (SharedGraph(detector), None, None)
    return graphs


def graph_cost(program, inputs: dict[str, Tensor], key: tuple[str, str] | None, latency: dict | None) -> dict:
    """{"gflops": the graph's own FLOPs on its example inputs (FlopCounterMode: convolutions, linear layers and
    matmuls, as fusion/cost.py counts)} plus, where the checkpoint has a latency table, "ms": its entry for the
    branch or the shared part (`key`), measured as fusion/cost.py measures (a branch with its fusion projection)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        program.module()(*inputs.values())
    cost = {"gflops": round(counter.get_total_flops() / 1e9, 6)}
    if latency and key in latency:
        cost["ms"] = latency[key]
    return cost


def export_model(model, out: Path, image_size: tuple[int, int], sweep_points: int) -> dict:
    """Export every graph of a GateFusionModule into `out` and write manifest.json there -> the manifest.
    image_size (W, H) of the camera graphs' images; sweep_points: P_sweeps of the LiDAR's motion-map input."""
    detector = model.detector.eval()
    out.mkdir(parents=True, exist_ok=True)
    batch = synthetic_frame(detector.grid, image_size, max(sweep_points, 1), detector.radar.max_points)
    batch.camera.images.uniform_(0, 1, generator=torch.Generator().manual_seed(0))
    examples = example_inputs(detector, batch, sweep_points)
    with torch.no_grad():
        bevs = {"camera": CameraGraph(detector, "high")(**examples["camera_high"]),
                "lidar": LidarGraph(detector, "fine")(**examples["lidar_fine"]),
                "radar": RadarGraph(detector)(**examples["radar_on"])}
    examples["shared"] = bevs | {"used": torch.ones(1, len(SENSORS), dtype=torch.bool)}
    if model.gate is not None:
        examples["gate"] = {"glimpses": glimpses(batch), "budget": torch.ones(1), "present": batch.present.bool(),
                            "price": torch.zeros(())}
    specs = []
    for name, (module, sensor, mode) in graph_modules(model, detector).items():
        inputs = examples[name]
        program = export_graph(module, inputs, out / f"{name}.pt2", data_dependent=sensor in ("lidar", "radar"))
        with torch.no_grad():
            result = program.module()(*inputs.values())
        outputs = result if isinstance(result, dict) else {"bev": result}
        key = (sensor, mode) if sensor else SHARED if name == "shared" else None
        specs.append(GraphSpec(name, f"{name}.pt2", sensor, mode, describe(inputs), describe(outputs),
                               graph_cost(program, inputs, key, model.latency), GRAPH_NOTES[sensor or name]))
    manifest = {
        "format": "torch.export (torch.export.load(file).module()(*inputs in the order listed))",
        "torch": torch.__version__,
        "batch_size": 1,
        "sensors": list(SENSORS), "modes": {s: list(MODES[s]) for s in SENSORS},
        "configurations": [[MODES[s].index(getattr(c, s)) for s in SENSORS] for c in configurations()],
        "configuration_costs": model.gate.costs.tolist() if model.gate is not None else None,
        "classes": list(CLASSES), "lidar_dims": list(LIDAR_DIMS), "radar_dims": list(RADAR_DIMS),
        "grid": {"x_range": list(detector.grid.x_range), "y_range": list(detector.grid.y_range),
                 "cell": detector.grid.cell},
        "image_size": list(image_size), "lidar_sweep_points": sweep_points if detector.lidar.motion else None,
        "graphs": [asdict(s) for s in specs],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


GRAPH_NOTES = {
    "gate": "glimpses from fusion.gate.glimpses(batch); decisions = configurations[argmax(logits - price * "
            "configuration_costs)], price 0 or calibrated for a budget (fusion.gate.calibrate_price)",
    "camera": "images in [0, 1], RGB",
    "lidar": "points: the mode's budget of the frame's points (fusion.export.pack_points with budget), NaN rows after",
    "radar": "points: the budget of the frame's points (fusion.export.pack_points with budget), NaN rows after",
    "shared": "inputs: each branch's BEV, zeros for a sensor not run; decode with fusion.head.CenterHead.decode (a "
              "zero doppler map, as without the radar, decodes the regressed velocity)",
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint of train.py")
    p.add_argument("--out", required=True, help="folder for the .pt2 graphs and manifest.json")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), default=None,
                   help="camera images of the graphs (default: the checkpoint's data image_size)")
    p.add_argument("--lidar-sweep-points", type=int, default=None,
                   help="with the LiDAR's motion map: points per frame its input holds (default: 4 x the fine "
                        "budget)")
    args = p.parse_args(argv)
    from fusion.checkpoint import load_checkpoint

    model, data_hp = load_checkpoint(args.ckpt)
    image_size = args.image_size or data_hp.get("image_size") or IMAGE_SIZE
    sweep = args.lidar_sweep_points or 4 * model.detector.lidar.modes["fine"].max_points
    manifest = export_model(model, Path(args.out), tuple(image_size), sweep)
    print(f"exported {len(manifest['graphs'])} graphs to {args.out}: "
          + ", ".join(g["name"] for g in manifest["graphs"]))
    return manifest


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        sys.exit(f"fusion.export: {e}")
