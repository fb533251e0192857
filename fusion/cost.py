"""Compute cost of every branch and mode of a FusionDetector, counted with torch's FlopCounterMode.

`branch_gflops(detector, frame_batch)` runs each encoder at each mode, and the shared part (fusion + decoder +
head, without the per-sensor fusion projections, which count with their branch) once, on a one-frame batch in
eval mode without grad, and returns GFLOPs (1e9 FLOPs; a multiply-add is 2):
{(sensor, mode): GFLOPs} for every sensor and mode ("off" = 0) plus ("shared", "on"). FlopCounterMode counts
convolutions, linear layers and matmuls, not norms, activations, grid_sample or scatter, so the table can
disagree with measured time, most for the camera (whose lift is grid_sample) and the point encoders (scatter). It
is counted with display=False (display=True needs the tabulate package); no attention is used here, so the
counter's blind spot for fused attention kernels does not apply. Point-encoder costs depend on the number of
points in the frame counted; they are small next to the convolutions.

`python -m fusion.cost --config C [--config OVERLAY ...]` builds the detector of any config (overlays applied in
order, as train.py applies them) and prints, for every branch and mode and for the shared part, GFLOPs and measured
ms (batch size 1, median of --repeats) with their shares of the full configuration, then every static
configuration's GFLOPs and end-to-end ms as shares of full: where the two shares disagree, the FLOP count misses what
the clock sees. The frame is synthetic (zero images of the config's image_size, --lidar-points and --radar-points
spread over the grid), since the model layer reads no dataset; FLOPs of the convolutions do not depend on content,
scatter and grid_sample time little.
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import time
from dataclasses import dataclass

import torch
import yaml
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from fusion.detector import FusionDetector, SensorConfig, build_detector, static_configs
from sensors.bev import BEVGrid
from sensors.frame import Batch, Boxes, CameraData, FrameMeta, LidarData, RadarData
from sensors.names import CAMERAS, IMAGE_SIZE, LIDAR_DIMS, MODES, RADAR_DIMS, SENSORS

SHARED = ("shared", "on")


def _count(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def _branch(detector: FusionDetector, sensor: str, batch: Batch, idx: Tensor, mode: str) -> Tensor:
    """One branch as it runs in a forward pass: its encoder, then its fusion projection of the learned channels
    (measurement maps such as the radar's Doppler map pass the fusion unprojected: FusionDetector.fused_bev)."""
    features = detector.run_encoder(sensor, batch, idx, mode)
    return detector.fusion.proj[sensor](features[:, :getattr(detector, sensor).channels])


def branch_gflops(detector: FusionDetector, frame_batch: Batch) -> dict[tuple[str, str], float]:
    """GFLOPs per (sensor, mode) and for SHARED, on the first frame of `frame_batch` (all sensors treated as
    present; an absent sensor's empty data still gives the fixed conv cost)."""
    batch = frame_batch.select(torch.zeros(1, dtype=torch.long))
    batch.present = torch.ones_like(batch.present)
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    was_training = detector.training
    detector.eval()
    table: dict[tuple[str, str], float] = {}
    try:
        with torch.no_grad():
            for s in SENSORS:
                for m_i, mode in enumerate(MODES[s]):
                    table[(s, mode)] = 0.0 if m_i == 0 else _count(lambda: _branch(detector, s, batch, idx, mode))
            used = torch.ones(1, len(SENSORS), dtype=torch.bool, device=idx.device)
            table[SHARED] = _count(lambda: detector.shared({}, used))
    finally:
        detector.train(was_training)
    return table


def config_cost(table: dict[tuple[str, str], float], config: SensorConfig) -> float:
    """Cost of one frame under `config` from a per-branch table (GFLOPs or ms): the chosen modes plus the shared
    part."""
    return table[SHARED] + sum(table[(s, getattr(config, s))] for s in SENSORS)


def relative_costs(table: dict[tuple[str, str], float], configs: list[SensorConfig]) -> torch.Tensor:
    """(K,) each configuration's cost as a fraction of the first's (full)."""
    full = config_cost(table, configs[0])
    return torch.tensor([config_cost(table, c) / full for c in configs])


def table_to_dict(table: dict[tuple[str, str], float]) -> dict[str, float]:
    """{"camera=low": ms, ..., "shared": ms} (the YAML form of a latency table; "off" entries left out)."""
    return {("shared" if k == SHARED else f"{k[0]}={k[1]}"): round(float(v), 4) for k, v in table.items()
            if k[1] != "off"}


def table_from_dict(values: dict[str, float]) -> dict[tuple[str, str], float]:
    """The inverse of table_to_dict; ValueError naming what is missing or unknown."""
    table: dict[tuple[str, str], float] = {(s, "off"): 0.0 for s in SENSORS}
    expected = {"shared"} | {f"{s}={m}" for s in SENSORS for m in MODES[s][1:]}
    if set(values) != expected:
        raise ValueError(f"cost table: expected keys {sorted(expected)}, got {sorted(values)} (missing "
                         f"{sorted(expected - set(values))}, unknown {sorted(set(values) - expected)})")
    for key, v in values.items():
        if not float(v) > 0:
            raise ValueError(f"cost table: {key} must be > 0, got {v}")
        table[SHARED if key == "shared" else tuple(key.split("="))] = float(v)
    return table


# ----------------------------------------------------------------------------------------------- measured cost

def synthetic_frame(grid: BEVGrid, image_size: tuple[int, int], lidar_points: int, radar_points: int,
                    seed: int = 0) -> Batch:
    """A one-frame Batch with every sensor present: six zero images of image_size = (W, H) with nuScenes-like
    mounting (cameras at 1.5 m, yawed 0, -55, -110, 180, 110, 55 degrees), and points spread uniformly over the
    grid (z in [-1.5, 2] m)."""
    gen = torch.Generator().manual_seed(seed)
    W, H = image_size
    K = torch.tensor([[W * 0.8, 0.0, W / 2], [0.0, W * 0.8, H / 2], [0.0, 0.0, 1.0]])
    axes = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # ego_R_cam at yaw 0
    ego_T_cam = torch.eye(4).repeat(len(CAMERAS), 1, 1)
    for i, yaw in enumerate((0.0, -55.0, -110.0, 180.0, 110.0, 55.0)):
        c, s_ = torch.cos(torch.tensor(yaw).deg2rad()), torch.sin(torch.tensor(yaw).deg2rad())
        ego_T_cam[i, :3, :3] = torch.tensor([[c, -s_, 0.0], [s_, c, 0.0], [0.0, 0.0, 1.0]]) @ axes
        ego_T_cam[i, :3, 3] = torch.tensor([0.0, 0.0, 1.5])
    camera = CameraData(torch.zeros(1, len(CAMERAS), 3, H, W), K.repeat(1, len(CAMERAS), 1, 1), ego_T_cam[None],
                        torch.ones(1, len(CAMERAS), dtype=torch.bool))

    def points(n: int, dims: int) -> Tensor:
        p = torch.rand(n, dims, generator=gen)
        p[:, 0] = grid.x_range[0] + p[:, 0] * (grid.x_range[1] - grid.x_range[0])
        p[:, 1] = grid.y_range[0] + p[:, 1] * (grid.y_range[1] - grid.y_range[0])
        p[:, 2] = -1.5 + 3.5 * p[:, 2]
        return p

    lidar = LidarData(points(lidar_points, len(LIDAR_DIMS)), torch.zeros(lidar_points, dtype=torch.long))
    radar = RadarData(points(radar_points, len(RADAR_DIMS)), torch.zeros(radar_points, dtype=torch.long))
    return Batch(camera, lidar, radar,
                 [Boxes.empty()], torch.ones(1, len(SENSORS), dtype=torch.bool), [FrameMeta("synthetic", "", 0)])


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms (CUDA synchronised)."""
    return interleaved_ms({0: fn}, repeats, warmup)[0]


def interleaved_ms(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall time in ms of each fn of `fns`, timed in `repeats` rounds that run every fn once: a burst of load
    from elsewhere on a shared machine then slows one round of every fn, not every round of one, so the medians
    stay comparable as ratios."""
    times: dict = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            t = _timed(fn)
            if i >= warmup:
                times[k].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def branch_ms(detector: FusionDetector, batch: Batch, repeats: int) -> dict[tuple[str, str], float]:
    """Measured ms per (sensor, mode) (encoder + its fusion projection) and for SHARED (fusion, decoder, head and
    decoding, with every branch's features given), on the one-frame `batch`, eval mode, no grad; interleaved."""
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    was_training = detector.training
    detector.eval()

    def branch(s: str, mode: str):
        return lambda: _branch(detector, s, batch, idx, mode)

    try:
        with torch.no_grad():
            fns = {(s, m): branch(s, m) for s in SENSORS for m in MODES[s][1:]}
            features = {s: detector.run_encoder(s, batch, idx, MODES[s][-1]) for s in SENSORS}
            used = torch.ones(1, len(SENSORS), dtype=torch.bool, device=idx.device)
            fns[SHARED] = lambda: detector.head.decode(detector.shared(features, used))
            table = interleaved_ms(fns, repeats)
    finally:
        detector.train(was_training)
    return {**{(s, "off"): 0.0 for s in SENSORS}, **table}


def configs_ms(detector: FusionDetector, batch: Batch, configs: list[SensorConfig], repeats: int
               ) -> dict[SensorConfig, float]:
    """Measured end-to-end ms of one frame under each configuration (forward + decoding), interleaved."""
    was_training = detector.training
    detector.eval()

    def run(config: SensorConfig):
        decisions = config.decisions(batch.present)
        return lambda: detector.head.decode(detector(batch, decisions))

    try:
        with torch.no_grad():
            return interleaved_ms({c: run(c) for c in configs}, repeats)
    finally:
        detector.train(was_training)


def fit_latency_table(measured: dict[SensorConfig, float]) -> dict[tuple[str, str], float]:
    """The per-branch latency table (ms per (sensor, mode) and SHARED) whose sums best explain the end-to-end ms of
    the measured configurations (least squares, every entry at least 1% of the largest measured time). Timing the
    branches one by one adds each one's fixed overheads to the shared part's; a table fitted to whole runs is the
    one whose config costs track what the clock sees (cost_report prints the residuals)."""
    keys = [(s, m) for s in SENSORS for m in MODES[s][1:]] + [SHARED]
    configs = list(measured)
    A = torch.tensor([[1.0 if k == SHARED or getattr(c, k[0]) == k[1] else 0.0 for k in keys] for c in configs],
                     dtype=torch.float64)
    y = torch.tensor([measured[c] for c in configs], dtype=torch.float64)[:, None]
    x = torch.linalg.lstsq(A, y).solution.flatten().clamp(min=0.01 * float(y.max()))
    return {**{(s, "off"): 0.0 for s in SENSORS}, **{k: float(v) for k, v in zip(keys, x)}}


def measure_latency_table(detector: FusionDetector, batch: Batch, repeats: int) -> dict[tuple[str, str], float]:
    """fit_latency_table over every static configuration timed end to end on the one-frame `batch`."""
    return fit_latency_table(configs_ms(detector, batch, static_configs(), repeats))


# ----------------------------------------------------------------------------------- below the sensor: views, tiles

TILES = 4  # tiles per side of the shared grid for per-region LiDAR decisions
HALO = 8  # shared cells added on every side of a tile when its fine stage runs alone (the stage's reach)


@dataclass(frozen=True)
class FineCosts:
    """Costs of decisions below the sensor, in the units of a latency table (ms per branch, fusion/cost.py's table; a
    configuration's cost is its sum over the full configuration's).

    camera_fixed[mode]: what the camera pays at `mode` once any view runs at it (its BEV stage, the lift's set-up);
    camera_view[mode]: each view that runs at `mode` (its image CNN and its lift), so that camera_fixed[mode] +
    views * camera_view[mode] is the table's camera cost with every view. LiDAR: `lidar_coarse` and `lidar_fine` as
    in the table; a frame fine in some of the tiles x tiles tiles pays the coarse mode plus `lidar_tile` per fine
    tile: the fine pillars of its points and the fine BEV stage on the tile with `halo` shared cells around it, run
    alone (the block-sparse scheme of SBNet: gather the tiles, run the stage, scatter back). `lidar_motion`, the
    LiDAR's motion map (from all the points, at the shared grid), is part of both LiDAR modes' costs: shown, not
    added. The detector composites the whole fine map today (FusionDetector.coarse_outside_tiles): lidar_tile is the
    cost of that scheme, measured on a crop, not a saving the detector already makes."""

    views: int
    camera_fixed: dict[str, float]
    camera_view: dict[str, float]
    lidar_coarse: float
    lidar_fine: float
    lidar_tile: float
    radar: float
    shared: float
    tiles: int = TILES
    halo: int = HALO
    lidar_motion: float = 0.0  # the motion map's part of lidar_coarse and lidar_fine (all points, the shared grid)

    def parts(self, views, tiles=None, lidar: str = "fine", radar: bool = True) -> dict[str, float]:
        """One frame's cost by part ("shared", "radar", "camera fixed", "camera views", "lidar"): `views` (N,)
        camera mode indices (0 off, 1 low, 2 high), `tiles` (T, T) bool fine tiles (None: all, where lidar is
        "fine"), LiDAR mode, radar on or off."""
        modes = [int(v) for v in views]
        out = {"shared": self.shared, "radar": self.radar if radar else 0.0, "camera fixed": 0.0,
               "camera views": 0.0, "lidar": 0.0}
        for m_i, mode in enumerate(MODES["camera"][1:], 1):
            k = sum(v == m_i for v in modes)
            out["camera fixed"] += self.camera_fixed[mode] if k else 0.0
            out["camera views"] += k * self.camera_view[mode]
        if lidar == "coarse":
            out["lidar"] = self.lidar_coarse
        elif lidar == "fine":
            n = self.tiles ** 2 if tiles is None else int(torch.as_tensor(tiles).sum())
            out["lidar"] = self.lidar_fine if n == self.tiles ** 2 else self.lidar_coarse + n * self.lidar_tile
        return out

    def cost(self, views, tiles=None, lidar: str = "fine", radar: bool = True) -> float:
        """One frame's cost, the sum of its parts."""
        return sum(self.parts(views, tiles, lidar, radar).values())

    def full(self) -> float:
        return self.cost([len(MODES["camera"]) - 1] * self.views)

    def rows(self) -> list[str]:
        """Markdown rows: each part and its share of full."""
        full = self.full()
        parts = [*((f"camera {m}, fixed", self.camera_fixed[m]) for m in MODES["camera"][1:]),
                 *((f"camera {m}, per view", self.camera_view[m]) for m in MODES["camera"][1:]),
                 ("lidar coarse, whole grid", self.lidar_coarse), ("lidar fine, whole grid", self.lidar_fine),
                 ("lidar motion map, in either mode", self.lidar_motion),
                 (f"lidar fine, per tile ({self.tiles}x{self.tiles}, halo {self.halo})", self.lidar_tile),
                 ("radar", self.radar), ("shared", self.shared)]
        return [f"| {name:<34} | {v:8.2f} | {v / full:5.3f} |" for name, v in parts]


def fine_costs(detector: FusionDetector, batch: Batch, table: dict[tuple[str, str], float], repeats: int,
               tiles: int = TILES, halo: int = HALO) -> FineCosts:
    """FineCosts of `detector` in the units of `table`, from shares measured on the one-frame `batch` (interleaved
    medians): the camera with one view against all views at each mode (per view = the difference over the other
    views), and the LiDAR's fine mode whole against its BEV stage alone, its motion map alone (paid by the coarse
    mode already) and its BEV stage on one tile crop with the halo."""
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    N = batch.camera.images.shape[1]
    one = torch.zeros(1, N, dtype=torch.bool, device=idx.device)
    one[0, 0] = True
    lidar = detector.lidar
    fine = lidar.modes["fine"]
    ratio = round(detector.grid.cell / fine.pillar_grid.cell)
    h, w = (detector.grid.H // tiles + 2 * halo) * ratio, (detector.grid.W // tiles + 2 * halo) * ratio
    crop = torch.zeros(1, fine.bev.body[0][0].in_channels, h, w, device=idx.device)
    canvas = torch.zeros(1, crop.shape[1], fine.pillar_grid.H, fine.pillar_grid.W, device=idx.device)
    points, index = batch.lidar.points.float(), batch.lidar.batch_index.long()
    fns = {("camera", m, "all"): (lambda m=m: detector.run_encoder("camera", batch, idx, m))
           for m in MODES["camera"][1:]}
    fns.update({("camera", m, "one"): (lambda m=m: detector.run_encoder("camera", batch, idx, m, views=one))
                for m in MODES["camera"][1:]})
    fns[("lidar", "fine")] = lambda: detector.run_encoder("lidar", batch, idx, "fine")
    fns[("lidar", "tile")] = lambda: fine.bev.features(crop)
    fns[("lidar", "stage")] = lambda: fine.bev(canvas)
    if lidar.motion:
        fns[("lidar", "motion")] = lambda: lidar.motion_map(points, index, 1)
    was_training = detector.training
    detector.eval()
    try:
        with torch.no_grad():
            ms = interleaved_ms(fns, repeats)
    finally:
        detector.train(was_training)
    fixed, view = {}, {}
    for m in MODES["camera"][1:]:
        every, single = ms[("camera", m, "all")], ms[("camera", m, "one")]
        share = min(1.0 / N, max(0.0, (every - single) / (N - 1)) / every) if N > 1 else 1.0
        view[m] = table[("camera", m)] * share
        fixed[m] = table[("camera", m)] - N * view[m]
    whole = ms[("lidar", "fine")]
    pillars = max(0.0, whole - ms[("lidar", "stage")] - ms.get(("lidar", "motion"), 0.0))
    tile = table[("lidar", "fine")] * (ms[("lidar", "tile")] + pillars / tiles ** 2) / whole
    motion = table[("lidar", "fine")] * ms.get(("lidar", "motion"), 0.0) / whole
    return FineCosts(N, fixed, view, table[("lidar", "coarse")], table[("lidar", "fine")], tile,
                     table[("radar", "on")], table[SHARED], tiles, halo, motion)


MIXED_VIEWS = ((2, 2, 2, 2, 2, 0), (2, 2, 0, 0, 0, 2), (2, 0, 0, 0, 0, 0), (2, 2, 1, 1, 1, 2), (1, 1, 0, 0, 0, 1),
               (0, 0, 0, 2, 0, 0))  # camera modes per view (CAMERAS order) of the sample fine_report times


def fine_report(detector: FusionDetector, batch: Batch, table: dict[tuple[str, str], float], repeats: int
                ) -> list[str]:
    """The rows of fine_costs in the units of `table`, and MIXED_VIEWS (LiDAR fine, radar on) as modelled cost/full
    beside end-to-end ms/full measured in one interleaved run with full."""
    fc = fine_costs(detector, batch, table, repeats)
    full = fc.full()
    lines = ["below the sensor (fusion.cost.FineCosts, in the fitted table's ms): camera views and LiDAR tiles",
             "| part                               | ms       | /full |", "|" + "-" * 36 + "|----------|-------|",
             *fc.rows(), "",
             "camera views (modes per view, CAMERAS order; LiDAR fine, radar on): modelled cost and measured ms as "
             "shares of full, timed interleaved with full; LiDAR tiles are costed, not yet run block-sparse",
             "| views              | cost/full | ms/full | cost vs ms |", "|--------------------|-----------|---------|"
             "------------|"]
    N = batch.camera.images.shape[1]
    samples = [v for v in MIXED_VIEWS if len(v) == N]
    dec = torch.tensor([[len(MODES[s]) - 1 for s in SENSORS]], device=batch.present.device)
    was_training = detector.training
    detector.eval()

    def run(v):
        views = None if v is None else torch.tensor([v], device=dec.device)
        return lambda: detector.head.decode(detector(batch, dec, views=views))

    try:
        with torch.no_grad():
            ms = interleaved_ms({None: run(None), **{v: run(v) for v in samples}}, repeats)
    finally:
        detector.train(was_training)
    for v in samples:
        c, m = fc.cost(v) / full, ms[v] / ms[None]
        name = " ".join(MODES["camera"][i][0] for i in v)
        lines.append(f"| {name:<18} | {c:9.2f} | {m:7.2f} | {(c - m) / m:+10.0%} |")
    return lines


def read_config(*paths: str) -> tuple[dict, dict]:
    """(model, data) sections of LightningCLI config files applied in order: a later file's keys win, as
    `train.py fit --config base --config overlay` applies them."""
    model, data = {}, {}
    for path in paths:
        cfg = yaml.safe_load(open(path)) or {}
        model.update(cfg.get("model") or {})
        data.update(cfg.get("data") or {})
    return model, data


def detector_from_config(*paths: str) -> tuple[FusionDetector, tuple[int, int]]:
    """The detector of LightningCLI config files (read_config; its model.* keys that build_detector takes) and
    data.image_size."""
    model, data = read_config(*paths)
    known = inspect.signature(build_detector).parameters
    detector = build_detector(**{k: v for k, v in model.items() if k in known and k != "camera_heatmap"})
    return detector, tuple(data.get("image_size", IMAGE_SIZE))


def gate_cost(batch: Batch, repeats: int, own_glimpse: bool = False) -> tuple[float, float]:
    """(GFLOPs, ms) of the gate (fusion/gate.py: glimpses + MLP) on the one-frame `batch`."""
    from fusion.gate import Gate, configurations

    gate = Gate(torch.ones(len(configurations())), own_glimpse=own_glimpse).to(batch.present.device).eval()
    budget = torch.ones(len(batch), device=batch.present.device)
    with torch.no_grad():
        return _count(lambda: gate(batch, budget)), median_ms(lambda: gate(batch, budget), repeats)


def cost_report(detector: FusionDetector, batch: Batch, repeats: int, gate_own_glimpse: bool = False) -> str:
    """The tables `python -m fusion.cost` prints, and the fitted latency table as a YAML line (the gate's costs)."""
    flops, ms = branch_gflops(detector, batch), branch_ms(detector, batch, repeats)
    configs = static_configs()
    full_g = config_cost(flops, configs[0])
    measured = configs_ms(detector, batch, configs, repeats)
    fitted = fit_latency_table(measured)
    full_ms, full_t = measured[configs[0]], config_cost(fitted, configs[0])
    gate_g, gate_ms = gate_cost(batch, repeats, gate_own_glimpse)
    lines = [f"per branch and mode, one frame, batch size 1 (full = {configs[0]}: {full_g:.3f} GFLOPs, "
             f"{full_ms:.1f} ms end to end); ms timed branch by branch, and fitted to the end-to-end times",
             "| branch | mode   | GFLOPs | share | ms     | share | fitted ms | share |",
             "|--------|--------|--------|-------|--------|-------|-----------|-------|"]
    for key in [(s, m) for s in SENSORS for m in MODES[s][1:]] + [SHARED]:
        lines.append(f"| {key[0]:<6} | {key[1]:<6} | {flops[key]:6.3f} | {flops[key] / full_g:5.2f} | "
                     f"{ms[key]:6.1f} | {ms[key] / full_ms:5.2f} | {fitted[key]:9.1f} | {fitted[key] / full_t:5.2f} |")
    lines.append(f"| gate   | on     | {gate_g:6.4f} | {gate_g / full_g:5.3f} | {gate_ms:6.2f} | "
                 f"{gate_ms / full_ms:5.3f} |           |       |")
    for sensor, low, high in (("camera", "low", "high"), ("lidar", "coarse", "fine")):
        lines.append(f"{sensor} {high} / {low}: {flops[(sensor, high)] / flops[(sensor, low)]:.1f}x GFLOPs, "
                     f"{ms[(sensor, high)] / ms[(sensor, low)]:.1f}x ms")
    lines += ["", "static configurations as shares of full: GFLOPs counted, the gate's cost (the fitted latency table) "
              "and end-to-end ms measured in this run",
              "| configuration                       | GFLOPs | GFLOPs/full | cost/full | ms     | ms/full | "
              "cost vs ms |",
              "|-------------------------------------|--------|-------------|-----------|--------|---------|"
              "------------|"]
    for c in configs:
        g, t, m = config_cost(flops, c), config_cost(fitted, c) / full_t, measured[c] / full_ms
        lines.append(f"| {str(c):<35} | {g:6.3f} | {g / full_g:11.2f} | {t:9.2f} | {measured[c]:6.1f} | {m:7.2f} | "
                     f"{(t - m) / m:+10.0%} |")
    lines += ["", *fine_report(detector, batch, fitted, repeats)]
    lines += ["", "the fitted latency table (gate_costs of a config, ms):",
              "gate_costs: {" + ", ".join(f"{k}: {v:.2f}" for k, v in table_to_dict(fitted).items()) + "}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description="GFLOPs and measured ms per branch, mode and static configuration")
    p.add_argument("--config", required=True, action="append",
                   help="a LightningCLI config file (configs/*.yaml); repeat it for overlays, applied in order")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    p.add_argument("--lidar-points", type=int, default=32768, help="LiDAR points of the synthetic frame")
    p.add_argument("--radar-points", type=int, default=300, help="radar points of the synthetic frame")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    detector, image_size = detector_from_config(*args.config)
    batch = synthetic_frame(detector.grid, image_size, args.lidar_points, args.radar_points).to(args.device)
    own = bool(read_config(*args.config)[0].get("gate_own_glimpse", False))
    report = cost_report(detector.to(args.device), batch, args.repeats, own)
    print(f"{' + '.join(args.config)}: {args.device}, {torch.get_num_threads()} threads, "
          f"image {image_size[0]}x{image_size[1]}, {args.lidar_points} LiDAR / {args.radar_points} radar points\n"
          f"{report}")
    return report


if __name__ == "__main__":
    main()
