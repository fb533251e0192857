"""Point-cloud helpers shared by the LiDAR and radar encoders: the per-frame point budget, the max of point
features per BEV cell, the sum of point values over a window of cells (their measurement maps), and the time-lag
scale of both sensors' point features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from sensors.bev import BEVGrid

TIME_LAG_SCALE = 0.2  # seconds; nuScenes LiDAR sweeps come every 0.05 s, radar every ~0.07 s


def budget_points(batch_index: Tensor, batch_size: int, budget: int, random: bool) -> Tensor:
    """Indices (<= budget per frame) of the points to keep: a random subset when `random`, else an evenly
    spread deterministic one (every count/budget-th point of the frame, no sort: this runs on every inference).
    batch_index (P,) long -> (P',) long."""
    P = batch_index.shape[0]
    if P == 0:
        return torch.zeros(0, dtype=torch.long, device=batch_index.device)
    counts = torch.bincount(batch_index, minlength=batch_size)
    if int(counts.max()) <= budget:
        return torch.arange(P, device=batch_index.device)
    grouped = not random and bool((batch_index[1:] >= batch_index[:-1]).all())
    if grouped:  # points of each frame contiguous (as collate writes them): rank within the frame directly
        order = torch.arange(P, device=batch_index.device)
    else:
        key = torch.rand(P, device=batch_index.device, dtype=torch.float64) if random else \
            (torch.arange(P, device=batch_index.device, dtype=torch.float64) * 0.6180339887498949) % 1.0
        order = torch.argsort(batch_index.double() + key)
    bi = batch_index[order]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(P, device=batch_index.device) - starts[bi]
    if not grouped:
        return order[rank < budget]
    n = counts[bi].clamp(min=1)
    step = (rank + 1) * budget // n > rank * budget // n  # exactly `budget` of the frame's n ranks, evenly spread
    keep = torch.where(n > budget, step, torch.ones_like(step))
    return order[keep]


def scatter_max(feats: Tensor, flat_index: Tensor, size: int) -> Tensor:
    """Max of non-negative (P, C) features per cell -> (size, C); empty cells are 0."""
    out = feats.new_zeros(size, feats.shape[1])
    return out.scatter_reduce(0, flat_index[:, None].expand(-1, feats.shape[1]), feats, "amax", include_self=True)


def window_sums(values: Tensor, flat_index: Tensor, batch_size: int, grid: BEVGrid, window: int) -> Tensor:
    """Sum of (P, C) point values over the window x window cells around each cell of B frames' grids (points in flat
    cells `flat_index`, zero padding at the edges) -> (B, C, H, W)."""
    sums = values.new_zeros(batch_size * grid.H * grid.W, values.shape[1]).index_add_(0, flat_index, values)
    sums = rearrange(sums, "(b h w) c -> b c h w", b=batch_size, h=grid.H)
    return F.avg_pool2d(sums, window, 1, window // 2, count_include_pad=True) * window ** 2
