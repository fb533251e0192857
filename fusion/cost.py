"""Compute cost of every branch and mode of a FusionDetector, counted with torch's FlopCounterMode.

`branch_gflops(detector, frame_batch)` runs each encoder at each mode, and the shared part (fusion + backbone +
head, without the per-sensor fusion projections, which count with their branch) once, on a one-frame batch in
eval mode without grad, and returns GFLOPs (1e9 FLOPs; a multiply-add is 2):
{(sensor, mode): GFLOPs} for every sensor and mode ("off" = 0) plus ("shared", "on"). FlopCounterMode counts
convolutions, linear layers and matmuls, not norms, activations, grid_sample or scatter, so the table can
disagree with measured time, most for the camera (whose lift is grid_sample) and the point encoders (scatter). It
is counted with display=False (display=True needs the tabulate package); no attention is used here, so the
counter's blind spot for fused attention kernels does not apply. Point-encoder costs depend on the number of
points in the frame counted; they are small next to the convolutions.

`python -m fusion.cost --config C` builds the detector of any config file and prints, for every branch and mode and
for the shared part, GFLOPs and measured ms (batch size 1, median of --repeats) with their shares of the full
configuration, then every static configuration's GFLOPs and end-to-end ms as shares of full: where the two shares
disagree, the FLOP count misses what the clock sees. The frame is synthetic (zero images of the config's
image_size, --lidar-points and --radar-points spread over the grid), since the model layer reads no dataset; FLOPs
of the convolutions do not depend on content, scatter and grid_sample time little.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import statistics
import time

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from fusion.detector import FusionDetector, SensorConfig, build_detector, select_camera, select_points
from sensors.bev import BEVGrid
from sensors.frame import Batch, Boxes, CameraData, FrameMeta, LidarData, RadarData
from sensors.names import CAMERAS, LIDAR_DIMS, MODES, RADAR_DIMS, SENSORS

SHARED = ("shared", "on")


def _count(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def branch_gflops(detector: FusionDetector, frame_batch: Batch) -> dict[tuple[str, str], float]:
    """GFLOPs per (sensor, mode) and for SHARED, on the first frame of `frame_batch` (all sensors treated as
    present; an absent sensor's empty data still gives the fixed conv cost)."""
    batch = _first_frame(frame_batch)
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    was_training = detector.training
    detector.eval()
    table: dict[tuple[str, str], float] = {}
    try:
        with torch.no_grad():
            for s in SENSORS:
                for m_i, mode in enumerate(MODES[s]):
                    table[(s, mode)] = 0.0 if m_i == 0 else _count(
                        lambda: detector.fusion.proj[s](detector.run_encoder(s, batch, idx, mode)))
            used = torch.ones(1, len(SENSORS), dtype=torch.bool, device=idx.device)
            table[SHARED] = _count(lambda: detector.shared({}, used))
    finally:
        detector.train(was_training)
    return table


def config_gflops(table: dict[tuple[str, str], float], config: SensorConfig) -> float:
    """GFLOPs of one frame under `config`: the chosen modes plus the shared part."""
    return table[SHARED] + sum(table[(s, getattr(config, s))] for s in SENSORS)


def decisions_gflops(table: dict[tuple[str, str], float], decisions: torch.Tensor) -> torch.Tensor:
    """(B, 3) long mode indices -> (B,) float GFLOPs per frame (the gate's compute penalty)."""
    rows = [torch.tensor([table[(s, m)] for m in MODES[s]], device=decisions.device) for s in SENSORS]
    return table[SHARED] + sum(rows[i][decisions[:, i].long()] for i in range(len(SENSORS)))


def _first_frame(batch: Batch) -> Batch:
    B = len(batch)
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    lp, li = select_points(batch.lidar.points, batch.lidar.batch_index, idx, B)
    rp, ri = select_points(batch.radar.points, batch.radar.batch_index, idx, B)
    return Batch(select_camera(batch.camera, idx), LidarData(lp, li), RadarData(rp, ri), batch.gt[:1],
                 torch.ones_like(batch.present[:1]), batch.meta[:1])


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


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms (CUDA synchronised)."""
    times = []
    for i in range(warmup + repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def branch_ms(detector: FusionDetector, batch: Batch, repeats: int) -> dict[tuple[str, str], float]:
    """Measured ms per (sensor, mode) (encoder + its fusion projection) and for SHARED (fusion, backbone, head and
    decoding, with every branch's features given), on the one-frame `batch`, eval mode, no grad."""
    idx = torch.zeros(1, dtype=torch.long, device=batch.present.device)
    detector.eval()
    table: dict[tuple[str, str], float] = {}
    with torch.no_grad():
        features = {}
        for s in SENSORS:
            for m_i, mode in enumerate(MODES[s]):
                if m_i == 0:
                    table[(s, mode)] = 0.0
                    continue
                run = lambda: detector.fusion.proj[s](detector.run_encoder(s, batch, idx, mode))  # noqa: E731
                table[(s, mode)] = median_ms(run, repeats)
                features[s] = detector.run_encoder(s, batch, idx, mode)
        used = torch.ones(1, len(SENSORS), dtype=torch.bool, device=idx.device)
        table[SHARED] = median_ms(lambda: detector.head.decode(detector.shared(features, used)), repeats)
    return table


def config_ms(detector: FusionDetector, batch: Batch, config: SensorConfig, repeats: int) -> float:
    """Measured end-to-end ms of one frame under `config` (forward + decoding)."""
    decisions = config.decisions(batch.present)
    with torch.no_grad():
        return median_ms(lambda: detector.head.decode(detector(batch, decisions)), repeats)


def static_configs() -> list[SensorConfig]:
    """Every static configuration with at least one sensor on, full (every sensor at its top mode) first."""
    combos = itertools.product(*(MODES[s][::-1] for s in SENSORS))
    return [SensorConfig(*c) for c in combos if any(m != "off" for m in c)]


def detector_from_config(path: str) -> tuple[FusionDetector, tuple[int, int]]:
    """The detector of a LightningCLI config file (its model.* keys that build_detector takes) and data.image_size."""
    import yaml

    cfg = yaml.safe_load(open(path))
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    known = inspect.signature(build_detector).parameters
    detector = build_detector(**{k: v for k, v in model.items() if k in known and k != "camera_heatmap"})
    return detector, tuple(data.get("image_size", (320, 180)))


def cost_report(detector: FusionDetector, batch: Batch, repeats: int) -> str:
    """The tables `python -m fusion.cost` prints."""
    flops, ms = branch_gflops(detector, batch), branch_ms(detector, batch, repeats)
    configs = static_configs()
    full_g = config_gflops(flops, configs[0])
    measured = {c: config_ms(detector, batch, c, repeats) for c in configs}
    full_ms = measured[configs[0]]
    lines = [f"per branch and mode, one frame, batch size 1 (full = {configs[0]}: {full_g:.3f} GFLOPs, "
             f"{full_ms:.1f} ms end to end)",
             "| branch | mode   | GFLOPs | share | ms     | share |",
             "|--------|--------|--------|-------|--------|-------|"]
    for key in [(s, m) for s in SENSORS for m in MODES[s][1:]] + [SHARED]:
        lines.append(f"| {key[0]:<6} | {key[1]:<6} | {flops[key]:6.3f} | {flops[key] / full_g:5.2f} | "
                     f"{ms[key]:6.1f} | {ms[key] / full_ms:5.2f} |")
    lines += ["", "static configurations: counted cost and measured time as shares of full",
              "| configuration                       | GFLOPs | cost/full | ms     | ms/full |",
              "|-------------------------------------|--------|-----------|--------|---------|"]
    for c in configs:
        g = config_gflops(flops, c)
        lines.append(f"| {str(c):<35} | {g:6.3f} | {g / full_g:9.2f} | {measured[c]:6.1f} | "
                     f"{measured[c] / full_ms:7.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description="GFLOPs and measured ms per branch, mode and static configuration")
    p.add_argument("--config", required=True, help="a LightningCLI config file (configs/*.yaml)")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
    p.add_argument("--lidar-points", type=int, default=32768, help="LiDAR points of the synthetic frame")
    p.add_argument("--radar-points", type=int, default=300, help="radar points of the synthetic frame")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    detector, image_size = detector_from_config(args.config)
    batch = synthetic_frame(detector.grid, image_size, args.lidar_points, args.radar_points).to(args.device)
    report = cost_report(detector.to(args.device), batch, args.repeats)
    print(f"{args.config}: {args.device}, {torch.get_num_threads()} threads, image {image_size[0]}x{image_size[1]}, "
          f"{args.lidar_points} LiDAR / {args.radar_points} radar points\n{report}")
    return report


if __name__ == "__main__":
    main()
