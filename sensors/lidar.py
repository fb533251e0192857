"""LiDAR pillar encoder at two resolutions, writing onto the shared BEV grid.

Modes (LIDAR_MODES of sensors/names.py without "off"): "coarse" uses pillars twice the shared cell size and a
smaller point budget; "fine" uses pillars half the shared cell size and a larger budget. Each mode has its own BEV
stage (sensors/bev.py BEVStage: `blocks` conv blocks at the pillar grid, then a transition to the shared grid,
strided for "fine", upsampled for "coarse"), so the resolution is what the branch pays for: in the demo config fine
costs 6.7 times coarse in GFLOPs and over 3 times in measured time, where the per-point work (the same for both up
to the point budget) weighs most for coarse. Per point: (x, y, z, intensity, time_lag, offset to the pillar centre
(2), offset to the pillar's point mean (3)) -> linear + ReLU -> max over the pillar's points (scatter_reduce) -> BEV
canvas -> convs. The features are only scaled to O(1) (self.scale), not normalised per point: with a per-point
LayerNorm after the linear layer (each point's features rescaled by their own spread), a 300-step LiDAR+radar
training ended with a 13% higher heatmap loss (1.27 vs 1.11). The radar encoder does the same.

With `motion`, MOTION_CHANNELS more channels follow the learned ones: the LiDAR's motion, measured and unlearned, as a
map the detector hands to the head past the fusion and the decoder (fusion/detector.py), as the radar's Doppler map.
The earlier sweeps are in the key frame's ego frame, so a still object's points from every sweep lie in one place and
a moving one's key-sweep points lie ahead of its earlier ones by v x time lag. Per cell, over a MOTION_WINDOW x
MOTION_WINDOW cell window and the points more than MOTION_MIN_HEIGHT above the local ground (the lowest point within
GROUND_WINDOW cells; the ground does not move): (mean position of the key sweep's points - mean position of the
earlier sweeps' points) / their mean time lag (vx, vy, m/s / 10, 0 where either is missing), and log(1 + the smaller
count) / 5. The window clips a moving object's ends, so the map reads low; the head learns its scale. It is computed
from all the points the encoder is given, whatever the mode: about 6-7 ms per frame on the demo's CPU, which the
FLOP count of fusion/cost.py does not see (scatter and pooling) and its timing does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sensors.bev import BEVGrid, BEVStage
from sensors.frame import LidarData
from sensors.points import TIME_LAG_SCALE, budget_points, scatter_max, window_sums

POINT_FEATURES = 10
MOTION_CHANNELS = 3
MOTION_WINDOW = 7  # cells: wide enough to hold a car's key-sweep and earlier points at once
GROUND_WINDOW = 9  # cells
MOTION_MIN_HEIGHT = 0.3  # m above the local ground
KEY_LAG = 1e-3  # s: points with a smaller time lag are the key sweep's (nuScenes: exactly 0)


class PillarNet(nn.Module):
    """(N, 5) points of B frames -> (B, channels, grid.H, grid.W) with pillars of `pillar` metres."""

    def __init__(self, grid: BEVGrid, pillar: float, max_points: int, channels: int = 32, blocks: int = 3,
                 time_split: bool = False):
        super().__init__()
        if time_split and channels % 2:
            raise ValueError(f"PillarNet: time_split needs an even number of channels, got {channels}")
        self.time_split = time_split
        ratio = grid.cell / pillar
        if not any(abs(ratio - r) < 1e-6 for r in (0.25, 0.5, 1, 2, 4)):
            raise ValueError(f"PillarNet: pillar {pillar} m must be the grid cell {grid.cell} m times 1/4, 1/2, 1, 2 "
                             f"or 4")
        self.grid, self.pillar_grid = grid, grid.scaled(pillar / grid.cell)
        self.max_points = max_points
        # time_split: the key sweep's points (time lag 0) and the earlier sweeps' go to separate halves of the
        # canvas, so that the convs see where an object is now and where it was as two images, not one max.
        point_channels = channels // 2 if time_split else channels
        self.point_net = nn.Sequential(nn.Linear(POINT_FEATURES, point_channels), nn.ReLU(inplace=True))
        self.bev = BEVStage(channels, channels, blocks, self.pillar_grid, grid)
        extent = max(abs(v) for v in (*grid.x_range, *grid.y_range))
        # Every feature to O(1); the time lag over TIME_LAG_SCALE (in plain seconds it was 0-0.2, far below the rest).
        self.register_buffer("scale", torch.tensor([extent, extent, 4.0, 100.0, TIME_LAG_SCALE] + [pillar] * 5),
                             persistent=False)

    def forward(self, points: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
        g = self.pillar_grid
        keep = budget_points(batch_index, batch_size, self.max_points, self.training)
        if len(keep) < len(points):
            points, batch_index = points[keep], batch_index[keep]
        col, row, inside = g.cell_index(points[:, :2])
        keep = torch.nonzero(inside & torch.isfinite(points).all(1)).flatten()
        points, flat = points[keep], ((batch_index * g.H + row) * g.W + col)[keep]
        col, row = col[keep], row[keep]
        size = batch_size * g.H * g.W
        ones = torch.ones_like(points[:, :1])  # not new_ones(len(flat), 1): a data-dependent size (fusion/export.py)
        per_point = points.new_zeros(size, 4).index_add_(0, flat, torch.cat([points[:, :3], ones], 1))[flat]
        mean = per_point[:, :3] / per_point[:, 3:]
        centre = g.to_metric(torch.stack([col, row], -1).to(points.dtype) + 0.5)
        feats = torch.cat([points[:, :5], points[:, :2] - centre, points[:, :3] - mean], -1) / self.scale
        if self.time_split:
            canvas = scatter_max(self.point_net(feats), flat + size * (points[:, 4] > 0).long(), 2 * size)
            canvas = rearrange(canvas, "(t b h w) c -> b (t c) h w", t=2, b=batch_size, h=g.H)
        else:
            canvas = rearrange(scatter_max(self.point_net(feats), flat, size), "(b h w) c -> b c h w",
                               b=batch_size, h=g.H)
        return self.bev(canvas)


class LidarEncoder(nn.Module):
    """LidarData -> (B, out_channels, H, W) on the shared grid; one PillarNet (own weights) per mode, each with `blocks`
    conv blocks at its pillar grid; with `motion`, the motion map after the learned `channels`."""

    def __init__(self, grid: BEVGrid, channels: int = 32, coarse_points: int = 16384, fine_points: int = 65536,
                 blocks: int = 3, time_split: bool = False, motion: bool = False):
        super().__init__()
        self.grid = grid
        self.channels = channels
        self.motion = motion
        self.out_channels = channels + (MOTION_CHANNELS if motion else 0)  # fusion/detector.py fused_bev
        self.modes = nn.ModuleDict({
            "coarse": PillarNet(grid, grid.cell * 2, coarse_points, channels, blocks, time_split),
            "fine": PillarNet(grid, grid.cell / 2, fine_points, channels, blocks, time_split),
        })

    def forward(self, data: LidarData, batch_size: int, mode: str = "fine") -> Tensor:
        if mode not in self.modes:
            raise ValueError(f"LidarEncoder: unknown mode {mode!r}; expected one of {tuple(self.modes)}")
        if data.points.ndim != 2 or data.points.shape[1] < 5:
            raise ValueError(f"LidarEncoder: points must be (N, 5), got {tuple(data.points.shape)}")
        points, batch_index = data.points.float(), data.batch_index.long()
        bev = self.modes[mode](points, batch_index, batch_size)
        if not self.motion:
            return bev
        return torch.cat([bev, self.motion_map(points, batch_index, batch_size)], 1)

    def motion_map(self, points: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
        """(N, 5) points of B frames -> (B, 3, H, W): the windowed key-sweep minus earlier-sweep displacement over
        the time lag (m/s / 10) and log(1 + the smaller count) / 5 (module docstring)."""
        g = self.grid
        col, row, inside = g.cell_index(points[:, :2])
        inside &= torch.isfinite(points[:, :5]).all(1)
        points, flat = points[inside], ((batch_index * g.H + row) * g.W + col)[inside]
        size = batch_size * g.H * g.W
        lowest = points.new_full((size,), torch.inf).scatter_reduce(0, flat, points[:, 2], "amin")
        lowest = rearrange(lowest.clamp(max=1e4), "(b h w) -> b 1 h w", b=batch_size, h=g.H)
        ground = -F.max_pool2d(-lowest, GROUND_WINDOW, 1, GROUND_WINDOW // 2).flatten()
        above = points[:, 2] > ground[flat] + MOTION_MIN_HEIGHT
        points, flat = points[above], flat[above]
        key = (points[:, 4] < KEY_LAG).to(points.dtype)[:, None]
        xy, lag = points[:, :2], points[:, 4:5]
        values = torch.cat([xy * key, key, xy * (1 - key), lag * (1 - key), 1 - key], 1)
        sums = window_sums(values, flat, batch_size, g, MOTION_WINDOW)
        n_key, n_old = sums[:, 2:3], sums[:, 6:7]
        both = (n_key > 0.5) & (n_old > 0.5)
        shift = sums[:, 0:2] / n_key.clamp(min=1.0) - sums[:, 3:5] / n_old.clamp(min=1.0)
        velocity = shift / (sums[:, 5:6] / n_old.clamp(min=1.0)).clamp(min=1e-3)
        velocity = torch.where(both, velocity.clamp(-30.0, 30.0), torch.zeros_like(velocity))
        return torch.cat([velocity / 10.0, torch.log1p(torch.minimum(n_key, n_old)) / 5.0], 1)
