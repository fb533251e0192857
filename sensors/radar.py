"""Radar point encoder: per point (x, y, z, rcs, vx, vy, time_lag, offset to the cell centre (2)) -> MLP -> max per
BEV cell (scatter_reduce) on the shared grid -> two conv blocks (radar is sparse; the convs spread it), or with
`context` a BEV stage with a context level at half resolution, as the other branches have (sensors/bev.py).

With `doppler`, DOPPLER_CHANNELS more channels follow the learned ones: the radar's measured velocity, unlearned, as a
map: per cell the mean ego-motion-compensated velocity (vx, vy, m/s / 10) of the points within a DOPPLER_WINDOW x
DOPPLER_WINDOW cell window, and log(1 + their count) / 5. The detector hands it to the head past the fusion and the
decoder (fusion/detector.py), so that the velocity regression can read what the radar measured directly."""
from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from sensors.bev import BEVGrid, BEVStage, conv_block
from sensors.frame import RadarData
from sensors.points import TIME_LAG_SCALE, budget_points, scatter_max, window_sums

POINT_FEATURES = 9
DOPPLER_CHANNELS = 3
DOPPLER_WINDOW = 5  # cells: radar returns come from an object's near side, its centre cell is a few cells away


class RadarEncoder(nn.Module):
    """RadarData -> (B, out_channels, H, W) on the shared grid (one mode: "on"): `channels` learned ones, then the
    Doppler map when `doppler`."""

    def __init__(self, grid: BEVGrid, channels: int = 16, max_points: int = 4096, context: bool = False,
                 doppler: bool = False):
        super().__init__()
        self.grid = grid
        self.channels = channels
        self.doppler = doppler
        self.out_channels = channels + (DOPPLER_CHANNELS if doppler else 0)
        self.max_points = max_points
        self.point_net = nn.Sequential(
            nn.Linear(POINT_FEATURES, channels), nn.ReLU(inplace=True),
            nn.Linear(channels, channels), nn.ReLU(inplace=True),
        )
        self.bev = BEVStage(channels, channels, 1, grid, grid) if context else \
            nn.Sequential(conv_block(channels, channels), conv_block(channels, channels))
        extent = max(abs(v) for v in (*grid.x_range, *grid.y_range))
        self.register_buffer("scale", torch.tensor([extent, extent, 4.0, 20.0, 10.0, 10.0, TIME_LAG_SCALE, grid.cell,
                                                   grid.cell]), persistent=False)

    def forward(self, data: RadarData, batch_size: int, mode: str = "on") -> Tensor:
        if mode != "on":
            raise ValueError(f"RadarEncoder: unknown mode {mode!r}; expected 'on'")
        if data.points.ndim != 2 or data.points.shape[1] < 7:
            raise ValueError(f"RadarEncoder: points must be (M, 7), got {tuple(data.points.shape)}")
        g = self.grid
        points, batch_index = data.points.float(), data.batch_index.long()
        keep = budget_points(batch_index, batch_size, self.max_points, self.training)
        points, batch_index = points[keep], batch_index[keep]
        col, row, inside = g.cell_index(points[:, :2])
        inside &= torch.isfinite(points).all(1)
        points, batch_index, col, row = points[inside], batch_index[inside], col[inside], row[inside]
        centre = g.to_metric(torch.stack([col, row], -1).to(points.dtype) + 0.5)
        feats = torch.cat([points[:, :7], points[:, :2] - centre], -1) / self.scale
        flat = (batch_index * g.H + row) * g.W + col
        canvas = scatter_max(self.point_net(feats), flat, batch_size * g.H * g.W)
        bev = self.bev(rearrange(canvas, "(b h w) c -> b c h w", b=batch_size, h=g.H))
        if not self.doppler:
            return bev
        return torch.cat([bev, self.doppler_map(points[:, 4:6] / 10.0, flat, batch_size)], 1)

    def doppler_map(self, velocity: Tensor, flat: Tensor, batch_size: int) -> Tensor:
        """(P, 2) scaled velocities of points in cells `flat` -> (B, 3, H, W): windowed mean velocity and count."""
        values = torch.cat([velocity, torch.ones_like(velocity[:, :1])], 1)
        sums = window_sums(values, flat, batch_size, self.grid, DOPPLER_WINDOW)
        count = sums[:, 2:]
        return torch.cat([sums[:, :2] / count.clamp(min=1.0), torch.log1p(count) / 5.0], 1)
