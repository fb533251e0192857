"""LiDAR pillar encoder at two resolutions, writing onto the shared BEV grid.

Modes (LIDAR_MODES in fusion/detector.py without "off"): "coarse" uses pillars of the shared cell size and a
smaller point budget; "fine" uses pillars half that size, a larger budget and a strided conv down to the shared
grid. Per point: (x, y, z, intensity, time_lag, offset to the pillar centre (2), offset to the pillar's point
mean (3)) -> linear + ReLU -> max over the pillar's points (scatter_reduce) -> BEV canvas -> convs. The features
are only scaled to O(1) (self.scale), not normalised per point: with a per-point LayerNorm after the linear layer
(each point's features rescaled by their own spread), a 300-step LiDAR+radar training ended with a 13% higher
heatmap loss (1.27 vs 1.11). The radar encoder does the same.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from sensors.bev import BEVGrid, conv_block
from sensors.frame import LidarData
from sensors.points import TIME_LAG_SCALE, budget_points, scatter_max

POINT_FEATURES = 10
class PillarNet(nn.Module):
    """(N, 5) points of B frames -> (B, channels, grid.H, grid.W) with pillars of `pillar` metres."""

    def __init__(self, grid: BEVGrid, pillar: float, max_points: int, channels: int = 32):
        super().__init__()
        stride = grid.cell / pillar
        if abs(stride - round(stride)) > 1e-6 or round(stride) not in (1, 2, 4):
            raise ValueError(f"PillarNet: pillar {pillar} m must be the grid cell {grid.cell} m divided by 1, 2 or 4")
        self.grid, self.pillar_grid = grid, grid.scaled(pillar / grid.cell)
        self.max_points = max_points
        self.point_net = nn.Sequential(nn.Linear(POINT_FEATURES, channels), nn.ReLU(inplace=True))
        downs = [conv_block(channels, channels, 2) for _ in range(int(round(math.log2(round(stride)))))]
        self.bev = nn.Sequential(*downs, conv_block(channels, channels))
        extent = max(abs(v) for v in (*grid.x_range, *grid.y_range))
        # Every feature to O(1); the time lag over TIME_LAG_SCALE (in plain seconds it was 0-0.2, far below the rest).
        self.register_buffer("scale", torch.tensor([extent, extent, 4.0, 100.0, TIME_LAG_SCALE] + [pillar] * 5),
                             persistent=False)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
        g = self.pillar_grid
        keep = budget_points(batch_index, batch_size, self.max_points, self.training)
        points, batch_index = points[keep], batch_index[keep]
        col, row, inside = g.cell_index(points[:, :2])
        inside &= torch.isfinite(points).all(1)
        points, batch_index, col, row = points[inside], batch_index[inside], col[inside], row[inside]
        flat = (batch_index * g.H + row) * g.W + col
        size = batch_size * g.H * g.W
        count = torch.zeros(size, device=points.device, dtype=points.dtype).index_add_(
            0, flat, torch.ones_like(points[:, 0]))
        mean = torch.zeros(size, 3, device=points.device, dtype=points.dtype).index_add_(0, flat, points[:, :3])
        mean = mean[flat] / count[flat, None]
        centre = g.to_metric(torch.stack([col, row], -1).to(points.dtype) + 0.5)
        feats = torch.cat([points[:, :5], points[:, :2] - centre, points[:, :3] - mean], -1) / self.scale
        canvas = scatter_max(self.point_net(feats), flat, size)
        canvas = rearrange(canvas, "(b h w) c -> b c h w", b=batch_size, h=g.H)
        return self.bev(canvas)


class LidarEncoder(nn.Module):
    """LidarData -> (B, channels, H, W) on the shared grid; one PillarNet (own weights) per mode."""

    def __init__(self, grid: BEVGrid, channels: int = 32, coarse_points: int = 16384, fine_points: int = 65536):
        super().__init__()
        self.channels = channels
        self.modes = nn.ModuleDict({
            "coarse": PillarNet(grid, grid.cell, coarse_points, channels),
            "fine": PillarNet(grid, grid.cell / 2, fine_points, channels),
        })

    def forward(self, data: LidarData, batch_size: int, mode: str = "fine") -> Tensor:
        if mode not in self.modes:
            raise ValueError(f"LidarEncoder: unknown mode {mode!r}; expected one of {tuple(self.modes)}")
        if data.points.ndim != 2 or data.points.shape[1] < 5:
            raise ValueError(f"LidarEncoder: points must be (N, 5), got {tuple(data.points.shape)}")
        return self.modes[mode](data.points.float(), data.batch_index.long(), batch_size)
