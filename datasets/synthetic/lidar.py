"""LIDAR_TOP: a 32-beam (HDL-32E elevations) spinning LiDAR, simulated by a vectorised ray cast against the ground
plane and the boxes of objects and scenery (slab test, first hit wins, so bodies occlude), with intensity from the
body's paint and range, returns that fade sooner from dark bodies, weather (rain/fog shorten the range and add near
spurious returns) and faults (silent, lost beams); points are written as nuScenes `.pcd.bin` (x, y, z, intensity,
ring) float32 rows."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.synthetic.config import WorldConfig
from datasets.synthetic.world import spec_values
from sensors.geometry import box_corners
from sensors.names import CLASSES

LIDAR_MOUNT = ((0.94, 0.0, 1.84), -90.0)  # (translation in ego, yaw in degrees)
LIDAR_ELEVATIONS = np.deg2rad(np.linspace(-30.67, 10.67, 32))


def write_lidar_bin(path: Path, points: np.ndarray) -> None:
    """(N, 5) rows (x, y, z, intensity, ring) as raw float32; N = 0 gives a valid empty (0-byte) file."""
    np.ascontiguousarray(points, np.float32).reshape(-1, 5).tofile(path)



def lidar_directions(azimuth_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions (32 * azimuth_steps, 3) in the sensor frame and their ring index (R,)."""
    az = np.arange(azimuth_steps) * (2 * np.pi / azimuth_steps)
    el, a = np.meshgrid(LIDAR_ELEVATIONS, az, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)], -1).reshape(-1, 3)
    ring = np.repeat(np.arange(32), azimuth_steps)
    return dirs, ring


# Vehicle silhouettes: (length fraction, height fraction) of the empty front-top corner of a box (the bonnet in
# front of the cabin, the low cab in front of a truck's load), so that LiDAR, like on real vehicles, tells the
# front from the back of a parked vehicle. Classes not listed are plain boxes.
FRONT_NOTCH = {"car": (0.28, 0.55), "truck": (0.22, 0.75), "construction_vehicle": (0.35, 0.5), "bus": (0.04, 0.75)}


def front_notches(cls: np.ndarray) -> np.ndarray:
    """(K,) class indices -> (K, 2) FRONT_NOTCH rows (zeros: a plain box)."""
    table = np.array([FRONT_NOTCH.get(c, (0.0, 0.0)) for c in CLASSES])
    return table[np.asarray(cls, np.int64)] if len(cls) else np.zeros((0, 2))


def _slab(o: np.ndarray, dl: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_range: float):
    """Ray/axis-aligned box intersection in the box frame: rays o + t * dl (R, 3) against [lo, hi] -> (t_near (R,),
    hit (R,) bool for 0 < t_near < max_range)."""
    t1 = (lo - o) / dl
    t2 = (hi - o) / dl
    t_near = np.minimum(t1, t2).max(1)
    t_far = np.maximum(t1, t2).min(1)
    return t_near, (t_near <= t_far) & (t_near > 0) & (t_near < max_range)


def ray_cast(dirs: np.ndarray, boxes: np.ndarray, height: float, max_range: float, notches: np.ndarray | None = None):
    """First hits of the lidar_directions() rays (32 beams x A azimuths, row-major) from the origin against the
    ground plane z = -height and (K, >=7) boxes (sensor frame). Each box is tested only against the rays inside
    its azimuth/elevation window (slab test), so the cost grows with the boxes' angular size, not R * K.
    notches: (K, 2) front_notches() rows; a box with a notch is the union of a full-length lower body and a
    cabin behind the notch (its annotation box stays the full box).

    Returns range (R,) (inf: no hit), hit (R,) int (-1 ground, -2 nothing, k box), and per box the number of rays
    that would hit it without occlusion (K,) and that do hit it first (K,)."""
    R, K = len(dirs), len(boxes)
    n_az = R // len(LIDAR_ELEVATIONS)
    step = 2 * np.pi / n_az
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < -1e-9, -height / dirs[:, 2], np.inf)
    potential = np.zeros(K, np.int64)
    t_box = np.full(R, np.inf)
    k_best = np.full(R, -1, np.int64)
    corners = box_corners(boxes[:, :7]) if K else np.zeros((0, 8, 3))
    for k in range(K):
        cx, cy, cz, l, w, h, yaw = boxes[k, :7]
        radius = 0.5 * math.hypot(l, w)
        d = math.hypot(cx, cy)
        if d - radius > max_range or d <= radius:
            continue
        bc = math.atan2(cy, cx)
        rel = (np.arctan2(corners[k, :4, 1], corners[k, :4, 0]) - bc + np.pi) % (2 * np.pi) - np.pi
        j0, j1 = int(math.floor((bc + rel.min()) / step)) - 1, int(math.ceil((bc + rel.max()) / step)) + 1
        cols = np.arange(j0, j1 + 1) % n_az
        dmin, dmax = d - radius, d + radius
        els = [math.atan2(z, dd) for z in (cz - h / 2, cz + h / 2) for dd in (dmin, dmax)]
        beams = np.flatnonzero((LIDAR_ELEVATIONS >= min(els) - 0.01) & (LIDAR_ELEVATIONS <= max(els) + 0.01))
        if len(beams) == 0:
            continue
        idx = (beams[:, None] * n_az + cols[None]).ravel()
        dr = dirs[idx]
        c, s_ = math.cos(yaw), math.sin(yaw)
        o = np.array([-(c * cx + s_ * cy), -(-s_ * cx + c * cy), -cz])
        dl = np.stack([dr[:, 0] * c + dr[:, 1] * s_, -dr[:, 0] * s_ + dr[:, 1] * c, dr[:, 2]], 1)
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        half = np.array([l, w, h]) / 2
        if notches is not None and notches[k, 0] > 0:
            fl, fh = notches[k]
            t_body, hit_body = _slab(o, dl, -half, np.array([half[0], half[1], -half[2] + fh * h]), max_range)
            t_cab, hit_cab = _slab(o, dl, -half, np.array([half[0] - fl * l, half[1], half[2]]), max_range)
            t_near = np.minimum(np.where(hit_body, t_body, np.inf), np.where(hit_cab, t_cab, np.inf))
            hit = hit_body | hit_cab
        else:
            t_near, hit = _slab(o, dl, -half, half, max_range)
        potential[k] = int(hit.sum())
        idx, t_near = idx[hit], t_near[hit]
        better = t_near < t_box[idx]
        t_box[idx[better]] = t_near[better]
        k_best[idx[better]] = k
    rng_ = np.minimum(t_box, t_ground)
    hit_id = np.where(t_box < t_ground, k_best, -1)
    hit_id = np.where(rng_ < max_range, hit_id, -2)
    rng_ = np.where(hit_id == -2, np.inf, rng_)
    first = np.bincount(hit_id[hit_id >= 0], minlength=K)
    return rng_, hit_id, potential, first


def count_own_hits(points: np.ndarray, hit: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(K,) number of LiDAR points that hit each box and lie inside it (as stored, float32); only a box's own
    returns can be inside it, since rays reach the ground under a box only through the box."""
    sel = np.flatnonzero(hit >= 0)
    b = boxes[hit[sel]]
    d = points[sel, :3].astype(np.float64) - b[:, :3]
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    inside = ((np.abs(c * d[:, 0] + s * d[:, 1]) <= b[:, 3] / 2) & (np.abs(-s * d[:, 0] + c * d[:, 1]) <= b[:, 4] / 2)
              & (np.abs(d[:, 2]) <= b[:, 5] / 2))
    return np.bincount(hit[sel][inside], minlength=len(boxes))


GROUND_REFLECTIVITY = 12.0  # LiDAR intensity scale of the road
WHITE_REFLECTIVITY = 45.0  # a white painted body: returns out to the LiDAR's full range


def return_probability(r: np.ndarray, reflectivity: np.ndarray, max_range: float) -> np.ndarray:
    """Share of LiDAR returns detected at range r (m) from surfaces of the given intensity scale. The received
    power falls as reflectivity / r^2, so the range where returns fade grows as sqrt(reflectivity): max_range for
    white paint, 0.54 x max_range (38 m of 70) for black paint (13) and about as far for the road (12). Dark cars
    beyond ~40 m all but vanish for the LiDAR while the camera (by day) and the radar still see them."""
    fade = max_range * np.sqrt(np.maximum(reflectivity, 1e-3) / WHITE_REFLECTIVITY)
    return 1.0 / (1.0 + np.exp(np.clip((r - fade) / (0.1 * fade), -50.0, 50.0)))



@dataclass
class LidarTargets:
    """What a LiDAR sweep can hit besides the ground, in the sensor frame: annotated boxes (K, >=7) of classes
    cls (K,) with their intensity scale reflectivity (K,) (None: the classes' SPECS values), and unannotated
    structures scenery (S, >=7) (Scenery boxes, None: none) with their scenery_reflectivity (S,)."""

    boxes: np.ndarray
    cls: np.ndarray
    reflectivity: np.ndarray | None = None
    scenery: np.ndarray | None = None
    scenery_reflectivity: np.ndarray | None = None


def simulate_lidar(rng: np.random.Generator, dirs: np.ndarray, ring: np.ndarray, targets: LidarTargets, height: float,
                   config: WorldConfig, weather: str, fault) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LiDAR sweep in the sensor frame from the lidar_directions() rays (dirs, ring) of a sensor `height` m
    above the ground: (N, 5) float32 rows (x, y, z, intensity, ring), the per-box visibility (K,) in [0, 1] from
    occlusion (1 where no ray reaches the box) and the box each point hit (N,) (-1: ground, scenery or spurious).
    Scenery returns points and occludes like the boxes. fault: None, "silent" (no points) or ("beams", lost rings)."""
    boxes_s, cls, reflectivity, scenery_s = targets.boxes, targets.cls, targets.reflectivity, targets.scenery
    K = len(boxes_s)
    per_box = spec_values(cls, "reflectivity") if reflectivity is None else np.asarray(reflectivity, np.float64)
    notches, all_boxes = front_notches(cls), np.asarray(boxes_s, np.float64)[:, :7].reshape(-1, 7)
    if scenery_s is not None and len(scenery_s):
        all_boxes = np.concatenate([all_boxes, np.asarray(scenery_s, np.float64)[:, :7]])
        per_box = np.concatenate([per_box, targets.scenery_reflectivity])
        notches = np.concatenate([notches, np.zeros((len(scenery_s), 2))])
    dist, hit, potential, first = ray_cast(dirs, all_boxes, height, config.lidar_max_range, notches)
    visibility = np.where(potential > 0, first / np.maximum(potential, 1), 1.0)[:K]
    if fault == "silent":
        return np.zeros((0, 5), np.float32), visibility, np.zeros(0, np.int64)
    valid = hit != -2
    r = np.where(valid, dist, 0.0)
    refl = np.full(len(r), GROUND_REFLECTIVITY)
    if len(per_box):
        refl[hit >= 0] = per_box[hit[hit >= 0]]
    p_keep = 0.97 * (1.0 - 0.25 * (r / config.lidar_max_range) ** 2)
    p_keep *= return_probability(r, refl, config.lidar_max_range)
    atten = np.ones_like(r)
    if weather == "rain":
        p_keep *= np.exp(-r / 120.0) * (r < 55.0)
        atten = np.full_like(r, 0.8)
    elif weather == "fog":
        p_keep *= np.exp(-r / 10.0) * (r < 30.0)  # dense fog: few LiDAR returns beyond ~20 m
        atten = np.exp(-r / 30.0)
    keep = valid & (rng.random(len(r)) < p_keep)
    if isinstance(fault, tuple):
        keep &= ~np.isin(ring, fault[1])
    r, h, dsel, rg, refl = r[keep], hit[keep], dirs[keep], ring[keep], refl[keep]
    on_box = h >= 0
    noise = np.where(on_box, rng.uniform(0.005, 0.03, len(r)), rng.normal(0, 0.02, len(r)))
    r = r + noise
    xyz = dsel * r[:, None]
    intensity = refl * (0.6 + 0.4 * np.exp(-r / 40.0)) * atten[keep] + rng.normal(0, 4.0, len(r))
    pts = np.concatenate([xyz, np.clip(intensity, 0, 255)[:, None], rg[:, None]], 1)
    if weather in ("rain", "fog"):
        n_spur = int(rng.poisson(config.lidar_azimuth_steps * (0.25 if weather == "rain" else 1.2)))
        ids = rng.integers(0, len(dirs), n_spur)
        sr = rng.uniform(0.8, 5.0 if weather == "fog" else 3.0, n_spur)
        spur = np.concatenate([dirs[ids] * sr[:, None], rng.uniform(0, 4, (n_spur, 1)), ring[ids, None]], 1)
        if isinstance(fault, tuple):
            spur = spur[~np.isin(ring[ids], fault[1])]
        pts = np.concatenate([pts, spur], 0)
        h = np.concatenate([h, np.full(len(spur), -1)])
    return pts.astype(np.float32), visibility, np.where((h >= 0) & (h < K), h, -1)

