"""The adaptive gate: per frame, from cheap glimpses of the frame's own sensor data and a compute budget, one choice
among the static configurations (camera off | low | high x LiDAR off | coarse | fine x radar off | on, never all
off), so that the detector runs only the branches the frame needs.

Glimpses (`glimpses`) are built from the Batch's sensor tensors and `present` only, never from its `meta`: the scene
description, conditions and fault lists are evaluation labels. Per camera: mean RGB, luminance spread, mean luminance
gradient (contrast and blur), dark and bright fractions of a 9 x 16 thumbnail of every 4th pixel, and whether the
camera is valid; LiDAR: log point counts in 5 range x 4 height bins (of every GLIMPSE_STRIDE-th point of the frame);
radar: log point counts in 5 range bins, mean |velocity| and mean RCS; plus `present`. A two-layer MLP maps them to
one utility per configuration (`configurations()`, full first), and the budget b enters as a price on cost: logit_k =
utility_k - price(b) * cost_k, with price(b) = softplus(a) * (1 - b) / b and one learned scalar a: no price at the full
budget, a rising one as b falls, so that a lower budget never raises any frame's cost. Configurations that need a
sensor the frame lacks get -inf, so a missing sensor is never chosen and, when anything is present, something is.

With `own_glimpse`, configuration k's output is read from the MLP applied to the glimpse the frame would give if only
k's sensors were present (the others' features and `present` entries zeroed, as for an absent sensor): what k is
estimated to be worth then depends only on the sensors k runs, so a sensor that dies, or a corruption of it, cannot
move the estimates of the configurations that do not run it. The MLP is the same; it runs once per sensor set (7
rows per frame instead of 1).

Why the price form: with b as one more MLP input, a 15-minute training ended with an expected cost of 0.55-0.67 of
full whatever b (0.24 to 0.98) was: the gate had matched the mean budget instead of following it. As a price, b
moves every frame's choice the same way, the utilities rank the configurations per frame, and the two are learned
apart.

The budget b is a fraction of the full configuration's cost, a mean over frames. Training samples b per batch and
penalises the batch's expected cost (fusion/module.py); at inference `decide` picks, per frame,
argmax(logit - extra_price * cost), and `calibrate_price` finds the extra price at which the mean cost over a set of
frames (the training split's) is b: the gate ranks the configurations per frame, the price turns its ranking into a
mean budget that holds.

Training: `sample` draws a straight-through Gumbel-softmax one-hot over configurations
(torch.nn.functional.gumbel_softmax, hard=True); `selection` turns it into the (B, 3) decisions the detector runs
and (B, 3) weights (1 in the forward pass) that multiply each sensor's features in the fusion, through which each
frame's detection loss reaches the gate.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fusion.detector import SensorConfig, static_configs
from sensors.frame import Batch, unit_images
from sensors.names import CAMERAS, MODES, SENSORS

THUMBNAIL = (9, 16)
RANGE_BINS = (10.0, 20.0, 30.0, 40.0)  # metres: 5 range bins
HEIGHT_BINS = (-1.0, 0.5, 2.0)  # metres (ego z): 4 height bins
CAMERA_FEATURES = 8  # per camera: mean RGB (3), luminance std, gradient, dark, bright, valid
LIDAR_FEATURES = (len(RANGE_BINS) + 1) * (len(HEIGHT_BINS) + 1)  # log counts per range x height bin
RADAR_FEATURES = len(RANGE_BINS) + 1 + 2  # log counts per range bin, mean |velocity|, mean RCS
# the sensor (index into SENSORS) each glimpse feature describes, in the order `glimpses` concatenates them: the
# cameras', the LiDAR's, the radar's, then `present`
GLIMPSE_SENSOR = torch.tensor([0] * (len(CAMERAS) * CAMERA_FEATURES) + [1] * LIDAR_FEATURES + [2] * RADAR_FEATURES +
                              list(range(len(SENSORS))))
GLIMPSE_FEATURES = len(GLIMPSE_SENSOR)  # without the budget
COUNT_SCALE = math.log1p(10000.0)  # log point counts to O(1)
# the LiDAR glimpse looks at every GLIMPSE_STRIDE-th point of each frame, counted from the frame's own first point,
# so that a frame's glimpse does not depend on the frames batched with it (about 1,000 points of a demo frame)
GLIMPSE_STRIDE = 32


def configurations() -> list[SensorConfig]:
    """The configurations the gate chooses among: every static configuration with a sensor on, full first."""
    return static_configs()


def configuration_table(device=None) -> Tensor:
    """(K, 3) long mode indices of configurations()."""
    return torch.tensor([c.indices() for c in configurations()], dtype=torch.long, device=device)


def camera_glimpse(batch: Batch) -> Tensor:
    """(B, N_cam * CAMERA_FEATURES): per camera, statistics of a 9 x 16 thumbnail (zeros for invalid cameras)."""
    images = unit_images(batch.camera.images[..., ::4, ::4])  # every 4th row and column: 1/16 of the pixels
    B, N = images.shape[:2]
    thumb = F.adaptive_avg_pool2d(images.flatten(0, 1).float(), THUMBNAIL)  # (BN, 3, 9, 16)
    luma = (0.299 * thumb[:, 0] + 0.587 * thumb[:, 1] + 0.114 * thumb[:, 2])  # (BN, h, w)
    grad = (luma[:, 1:, :] - luma[:, :-1, :]).abs().mean((1, 2)) + (luma[:, :, 1:] - luma[:, :, :-1]).abs().mean((1, 2))
    feats = torch.cat([thumb.mean((2, 3)), luma.std((1, 2))[:, None], 4 * grad[:, None],
                       (luma < 0.1).float().mean((1, 2))[:, None], (luma > 0.9).float().mean((1, 2))[:, None]], 1)
    valid = rearrange(batch.camera.valid.float(), "b n -> (b n) 1")
    feats = torch.cat([feats * valid, valid], 1)
    return rearrange(feats, "(b n) f -> b (n f)", b=B, n=N)


def point_counts(batch_index: Tensor, bins: Tensor, batch_size: int, n_bins: int) -> Tensor:
    """Per frame, log(1 + number of points) in each of n_bins bins, over COUNT_SCALE -> (B, n_bins)."""
    flat = batch_index.long() * n_bins + bins
    counts = torch.bincount(flat, minlength=batch_size * n_bins).reshape(batch_size, n_bins).float()
    return torch.log1p(counts) / COUNT_SCALE


def lidar_glimpse(batch: Batch) -> Tensor:
    """(B, 20): log LiDAR point counts by range (5 bins) x height (4 bins)."""
    bi = batch.lidar.batch_index.long()
    _, counts = torch.unique_consecutive(bi, return_counts=True)  # a frame's points are contiguous (collate, select)
    ends = torch.cumsum(counts, 0).tolist()
    keep = torch.cat([torch.arange(e - n, e, GLIMPSE_STRIDE, device=bi.device) for e, n in zip(ends, counts.tolist())]
                     ) if ends else bi.new_zeros(0)
    p, bi = batch.lidar.points[keep, :3], bi[keep]
    ok = torch.isfinite(p).all(1)
    p, bi = p[ok], bi[ok]
    r = torch.bucketize(torch.hypot(p[:, 0], p[:, 1]).contiguous(), p.new_tensor(RANGE_BINS))
    z = torch.bucketize(p[:, 2].contiguous(), p.new_tensor(HEIGHT_BINS))
    return point_counts(bi, r * (len(HEIGHT_BINS) + 1) + z, len(batch), LIDAR_FEATURES)


def radar_glimpse(batch: Batch) -> Tensor:
    """(B, 7): log radar point counts by range (5 bins), mean |velocity| / 10 m/s, mean RCS / 20."""
    p = batch.radar.points
    ok = torch.isfinite(p[:, :6]).all(1)
    p, bi = p[ok], batch.radar.batch_index[ok].long()
    B = len(batch)
    r = torch.bucketize(torch.hypot(p[:, 0], p[:, 1]).contiguous(), p.new_tensor(RANGE_BINS))
    counts = point_counts(bi, r, B, len(RANGE_BINS) + 1)
    n = torch.zeros(B, device=p.device).index_add_(0, bi, torch.ones_like(p[:, 0])).clamp(min=1)
    speed = torch.zeros(B, device=p.device).index_add_(0, bi, torch.hypot(p[:, 4], p[:, 5])) / n / 10.0
    rcs = torch.zeros(B, device=p.device).index_add_(0, bi, p[:, 3]) / n / 20.0
    return torch.cat([counts, speed[:, None], rcs[:, None]], 1)


def glimpses(batch: Batch) -> Tensor:
    """(B, GLIMPSE_FEATURES) gate input without the budget, from sensor tensors and `present` only; a sensor
    not present contributes zeros."""
    present = batch.present.float()
    parts = [camera_glimpse(batch) * present[:, :1], lidar_glimpse(batch) * present[:, 1:2],
             radar_glimpse(batch) * present[:, 2:3], present]
    return torch.nan_to_num(torch.cat(parts, 1), nan=0.0, posinf=0.0, neginf=0.0)


ESTIMATORS = ("regression", "gumbel")


class Gate(nn.Module):
    """Glimpses + budget -> one logit per configuration (B, K), -inf where the frame lacks a sensor it needs.

    costs: (K,) each configuration's cost as a fraction of full (1.0 for configurations()[0]); the price that
    `decide` subtracts is in those units. Kept as a buffer, so a checkpoint carries the costs its gate used.
    estimator: what the MLP's K outputs are. "regression": the detection loss the frame would have under each
    configuration (`risk`, learned by regression on the losses of the frames trained with random configurations;
    utility = -risk). "gumbel": utilities learned through a straight-through Gumbel-softmax sample
    (`sample`, `selection`).
    own_glimpse: each configuration's output reads only the glimpses of the sensors it runs (module docstring)."""

    def __init__(self, costs: Tensor, hidden: int = 64, estimator: str = "regression", own_glimpse: bool = False):
        super().__init__()
        K = len(configurations())
        if costs.shape != (K,):
            raise ValueError(f"Gate: costs must be ({K},), one per configuration, got {tuple(costs.shape)}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"Gate: unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
        self.estimator = estimator
        self.register_buffer("costs", costs.float().clone())
        self.register_buffer("table", configuration_table(), persistent=False)
        self.own_glimpse = own_glimpse
        # (S, F) which glimpse features each sensor set keeps, and (K,) the set of each configuration's sensors
        sets, set_of = torch.unique(self.table > 0, dim=0, return_inverse=True)
        self.register_buffer("set_mask", sets[:, GLIMPSE_SENSOR].float(), persistent=False)
        self.register_buffer("set_of", set_of, persistent=False)
        # added to the predicted losses at inference (eval.py --gate-offsets: the gate's mean error per configuration
        # on training frames); zero in training, and not saved
        self.register_buffer("offset", torch.zeros(K), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(GLIMPSE_FEATURES, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, K))
        self.price_scale = nn.Parameter(torch.tensor(math.log(math.e - 1)))  # softplus(.) = 1 at the start

    @property
    def min_budget(self) -> float:
        """The cheapest configuration's share of full: the lowest mean budget that can be met."""
        return float(self.costs.min())

    def allowed(self, present: Tensor) -> Tensor:
        """(B, 3) bool present -> (B, K) bool: configurations whose sensors are all present. A frame with no sensor
        present gets full (the detector then turns every absent sensor off)."""
        on = self.table > 0  # (K, 3)
        ok = ~(on[None] & ~present.bool()[:, None]).any(-1)
        none = ~ok.any(1)
        ok[none, 0] = True
        return ok

    def forward(self, batch: Batch, budget: Tensor) -> Tensor:
        """budget (B,) fractions of full -> (B, K) logits (-inf for configurations not allowed)."""
        return self.logits(self.risk(batch), budget, batch.present)

    def risk(self, batch: Batch) -> Tensor:
        """(B, K) the MLP's outputs: the predicted detection loss per configuration ("regression", plus `offset`;
        utilities under "gumbel")."""
        return self.scores(glimpses(batch))

    def scores(self, g: Tensor) -> Tensor:
        """(B, GLIMPSE_FEATURES) glimpses -> (B, K) the MLP's outputs, as `risk` (fusion/export.py exports this)."""
        if self.own_glimpse:  # (B, S, K): the MLP on each sensor set's part of the glimpse; k reads its own set's row
            k = torch.arange(len(self.set_of), device=g.device)
            scores = self.mlp(g[:, None, :] * self.set_mask)[:, self.set_of, k]
        else:
            scores = self.mlp(g)
        return scores + self.offset if self.estimator == "regression" else scores

    def logits(self, scores: Tensor, budget: Tensor, present: Tensor) -> Tensor:
        """The MLP's (B, K) scores (risks or utilities), budget (B,), present (B, 3) -> (B, K) logits."""
        utility = -scores if self.estimator == "regression" else scores
        b = budget.float().reshape(-1, 1).to(utility.device).clamp(min=1e-3)
        logits = utility - F.softplus(self.price_scale) * (1 - b) / b * self.costs
        return logits.masked_fill(~self.allowed(present), float("-inf"))

    def index_of(self, decisions: Tensor) -> Tensor:
        """(B, 3) mode indices -> (B,) index into configurations(), -1 for all off."""
        match = (decisions[:, None, :] == self.table[None]).all(-1)  # (B, K)
        return torch.where(match.any(1), match.float().argmax(1), torch.full_like(match[:, 0], -1, dtype=torch.long))

    def decide(self, logits: Tensor, price: float = 0.0) -> Tensor:
        """Hard choice per frame: argmax(logit - price * cost) -> (B,) configuration indices."""
        return torch.argmax(logits - price * self.costs, 1)

    def sample(self, logits: Tensor, tau: float) -> Tensor:
        """(B, K) straight-through Gumbel-softmax one-hot (training)."""
        return F.gumbel_softmax(logits, tau=tau, hard=True)

    def selection(self, onehot: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K) one-hot (straight-through or hard) -> (decisions (B, 3) long, weights (B, 3) float): the
        weight of sensor s is the summed selection of the configurations that run s at the chosen mode, 1 in the
        forward pass, whose gradient reaches every configuration sharing that choice."""
        k = onehot.argmax(1)
        decisions = self.table[k]  # (B, 3)
        same = (self.table[None, :, :] == decisions[:, None, :]).to(onehot.dtype)  # (B, K, 3)
        weights = torch.einsum("bk,bks->bs", onehot, same)
        return decisions, weights

    def expected_cost(self, logits: Tensor) -> Tensor:
        """(B,) expected cost (fraction of full) under softmax(logits)."""
        return logits.softmax(1) @ self.costs

    def marginals(self, logits: Tensor) -> dict[str, Tensor]:
        """softmax(logits) summed per sensor and mode: sensor -> (B, n_modes) probabilities."""
        p = logits.softmax(1)
        out = {}
        for i, s in enumerate(SENSORS):
            one = F.one_hot(self.table[:, i], len(MODES[s])).to(p.dtype)  # (K, n_modes)
            out[s] = p @ one
        return out


def calibrate_price(gate: Gate, logits: Tensor, budget: float, iterations: int = 50) -> float:
    """The price at which the mean cost of `decide(logits, price)` over the frames of `logits` (N, K) is closest to
    `budget` (a fraction of full): bisection, since the mean cost does not increase with the price."""
    if not gate.min_budget <= budget <= 1.0:
        raise ValueError(f"calibrate_price: budget {budget} outside [{gate.min_budget:.3f}, 1] (the cheapest "
                         f"configuration's share of full, and full)")
    finite = logits[torch.isfinite(logits)]
    span = float(finite.max() - finite.min()) + 1.0 if finite.numel() else 1.0
    costs = gate.costs.sort().values
    gap = float((costs[1:] - costs[:-1]).clamp(min=1e-3).min()) if len(costs) > 1 else 1.0
    lo, hi = -span / gap, span / gap  # prices at which every frame takes its most / least expensive choice

    def mean_cost(price: float) -> float:
        return float(gate.costs[gate.decide(logits, price)].mean())

    for _ in range(iterations):
        mid = (lo + hi) / 2
        if mean_cost(mid) > budget:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda p: abs(mean_cost(p) - budget))
