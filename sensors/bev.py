"""The shared bird's-eye-view (BEV) grid that every sensor encoder writes onto, the conv blocks the encoders and
the fusion detector are built from, and `BEVStage`, a sensor branch's own BEV encoder at its own grid resolution
(sensors/ and fusion/ both import this module; it imports neither).

Layout: a BEV tensor is (B, C, H, W) with rows along +y and columns along +x of the key-frame ego frame:
cell (row i, col j) covers x in [x_min + j * cell, x_min + (j + 1) * cell), y likewise with i. Metric points map
to continuous cell coordinates (col, row) where integer + 0.5 is a cell centre.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BEVGrid:
    """x/y range (m), cell size (m) and the z range (m) that camera lifting samples heights from."""

    x_range: tuple[float, float] = (-51.2, 51.2)
    y_range: tuple[float, float] = (-51.2, 51.2)
    cell: float = 0.8
    z_range: tuple[float, float] = (-2.0, 4.0)

    def __post_init__(self):
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range), ("z_range", self.z_range)):
            if not hi > lo:
                raise ValueError(f"BEVGrid: {name} must be increasing, got {(lo, hi)}")
        if self.cell <= 0:
            raise ValueError(f"BEVGrid: cell must be > 0, got {self.cell}")
        for name, (lo, hi) in (("x_range", self.x_range), ("y_range", self.y_range)):
            n = (hi - lo) / self.cell
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"BEVGrid: {name} {(lo, hi)} is not a whole number of {self.cell} m cells")

    @property
    def W(self) -> int:
        return int(round((self.x_range[1] - self.x_range[0]) / self.cell))

    @property
    def H(self) -> int:
        return int(round((self.y_range[1] - self.y_range[0]) / self.cell))

    def scaled(self, factor: float) -> "BEVGrid":
        """The same extent with cells `factor` times larger (factor 0.5: twice as fine)."""
        return BEVGrid(self.x_range, self.y_range, self.cell * factor, self.z_range)

    def to_cell(self, xy: Tensor) -> Tensor:
        """(..., 2) metric x, y -> (..., 2) continuous (col, row)."""
        origin = xy.new_tensor([self.x_range[0], self.y_range[0]])
        return (xy - origin) / self.cell

    def to_metric(self, colrow: Tensor) -> Tensor:
        """(..., 2) continuous (col, row) -> (..., 2) metric x, y."""
        origin = colrow.new_tensor([self.x_range[0], self.y_range[0]])
        return colrow * self.cell + origin

    def cell_index(self, xy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 2) metric x, y -> (col (N,) long, row (N,) long, inside (N,) bool)."""
        cr = torch.floor(self.to_cell(xy)).long()
        col, row = cr[:, 0], cr[:, 1]
        inside = (col >= 0) & (col < self.W) & (row >= 0) & (row < self.H)
        return col, row, inside

    def cell_centers(self, device=None) -> Tensor:
        """(H, W, 2) metric x, y of every cell centre."""
        rows = torch.arange(self.H, device=device, dtype=torch.float32) + 0.5
        cols = torch.arange(self.W, device=device, dtype=torch.float32) + 0.5
        r, c = torch.meshgrid(rows, cols, indexing="ij")
        return self.to_metric(torch.stack([c, r], -1))

    def sample_points(self, heights: int, device=None) -> Tensor:
        """(Z, H, W, 3) ego-frame 3D points: every cell centre at `heights` heights spread over z_range
        (the centres of `heights` equal slices)."""
        xy = self.cell_centers(device)
        lo, hi = self.z_range
        z = lo + (torch.arange(heights, device=device, dtype=torch.float32) + 0.5) * (hi - lo) / heights
        xy = xy.expand(heights, -1, -1, -1)
        zz = z[:, None, None, None].expand(-1, self.H, self.W, 1)
        return torch.cat([xy, zz], -1)


def norm2d(channels: int) -> torch.nn.GroupNorm:
    """GroupNorm: independent of the (sub-)batch size, so per-frame branch selection trains like inference."""
    return torch.nn.GroupNorm(max(1, min(8, channels // 4)), channels)


def conv_block(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> torch.nn.Sequential:
    """conv (no bias) -> GroupNorm -> ReLU; (B, cin, H, W) -> (B, cout, H / stride, W / stride)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        norm2d(cout),
        torch.nn.ReLU(inplace=True),
    )


class BEVStage(torch.nn.Module):
    """A sensor branch's own BEV encoder, run at the branch's grid and brought to the shared one.

    (B, cin, h, w) on `grid` -> (B, channels, H, W) on `shared`: `blocks` conv blocks at the branch's resolution,
    then a transition conv block, strided by `grid`/`shared` when the branch's grid is finer (LiDAR fine), then a
    context stage (a stride-2 level with twice the channels, upsampled and merged back: the BEV backbone of
    CenterPoint-style detectors in small); on a coarser grid (the camera's lift, LiDAR coarse) the output is
    upsampled bilinearly. In CenterPoint-style detectors the 2D backbone after the pillar scatter belongs to the LiDAR
    branch; here every branch has one, at its own resolution, so that a finer mode pays for its resolution here and
    the shared decoder after fusion stays light (fusion/detector.py)."""

    def __init__(self, cin: int, channels: int, blocks: int, grid: BEVGrid, shared: BEVGrid):
        super().__init__()
        ratio = shared.cell / grid.cell
        stride = int(round(ratio)) if ratio >= 1 else 1
        if ratio >= 1 and (abs(ratio - stride) > 1e-6 or stride not in (1, 2, 4)):
            raise ValueError(f"BEVStage: grid cell {grid.cell} m must be the shared cell {shared.cell} m / 1, 2 or 4")
        self.shared = shared
        c = channels
        layers = [conv_block(cin if i == 0 else c, c) for i in range(blocks)]
        self.body = torch.nn.Sequential(*layers, conv_block(c if blocks else cin, c, stride))
        self.down = torch.nn.Sequential(conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c), conv_block(2 * c, 2 * c))
        self.up = torch.nn.Sequential(torch.nn.ConvTranspose2d(2 * c, c, 2, 2, bias=False), norm2d(c),
                                      torch.nn.ReLU(inplace=True))
        self.merge = conv_block(2 * c, c)

    def features(self, x: Tensor) -> Tensor:
        """The stage before it is brought to the shared grid's size: on a crop of the branch's grid (a tile), the
        crop's features, at the shared cell size where the branch's grid is as fine or finer (LiDAR fine; coarser
        grids keep their own cell size). fusion/cost.py times the fine LiDAR's tiles this way."""
        x = self.body(x)
        y = self.up(self.down(x))
        return self.merge(torch.cat([x, y[..., :x.shape[-2], :x.shape[-1]]], 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        if x.shape[-2:] != (self.shared.H, self.shared.W):
            x = torch.nn.functional.interpolate(x, size=(self.shared.H, self.shared.W), mode="bilinear",
                                                align_corners=False)
        return x
