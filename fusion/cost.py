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
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from fusion.detector import MODES, FusionDetector, SensorConfig, select_camera, select_points
from sensors.frame import Batch, LidarData, RadarData
from sensors.names import SENSORS

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
