"""The five radars: Doppler returns mostly from vehicles (rcs by size, fluctuating per object and per return),
weak or rare from small classes and scenery, up to 100 m ahead, with raw radial velocity (vx, vy) and its
ego-motion compensated version (vx_comp, vy_comp), static clutter; written as the devkit's 18-field binary `.pcd`."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.synthetic.world import RCS_POINT_SIGMA, Scenery, spec_values
from sensors.geometry import points_in_boxes

# channel -> (translation in ego, yaw in degrees), close to real nuScenes
RADAR_MOUNTS = {
    "RADAR_FRONT": ((3.41, 0.0, 0.50), 0.0),
    "RADAR_FRONT_LEFT": ((2.42, 0.80, 0.78), 88.0),
    "RADAR_FRONT_RIGHT": ((2.42, -0.80, 0.78), -88.0),
    "RADAR_BACK_LEFT": ((-0.56, 0.63, 0.53), 170.0),
    "RADAR_BACK_RIGHT": ((-0.56, -0.63, 0.53), -170.0),
}

RADAR_DTYPE = np.dtype([
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dyn_prop", "i1"), ("id", "<i2"), ("rcs", "<f4"),
    ("vx", "<f4"), ("vy", "<f4"), ("vx_comp", "<f4"), ("vy_comp", "<f4"), ("is_quality_valid", "i1"),
    ("ambig_state", "i1"), ("x_rms", "i1"), ("y_rms", "i1"), ("invalid_state", "i1"), ("pdh0", "i1"),
    ("vx_rms", "i1"), ("vy_rms", "i1"),
])
RADAR_HEADER = (
    "# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\n"
    "FIELDS x y z dyn_prop id rcs vx vy vx_comp vy_comp is_quality_valid ambig_state x_rms y_rms invalid_state "
    "pdh0 vx_rms vy_rms\nSIZE 4 4 4 1 2 4 4 4 4 4 1 1 1 1 1 1 1 1\nTYPE F F F I I F F F F F I I I I I I I I\n"
    "COUNT 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
    "DATA binary\n"
)


def write_radar_pcd(path: Path, points: np.ndarray) -> None:
    """Write a RADAR_DTYPE array as a devkit-readable binary PCD; an empty cloud is one NaN point, and the payload
    gets one trailing byte (the devkit reader asserts a strictly longer buffer)."""
    if len(points) == 0:
        points = np.zeros(1, RADAR_DTYPE)
        points["x"] = np.nan
        points["ambig_state"] = 3
    with open(path, "wb") as f:
        f.write(RADAR_HEADER.format(n=len(points)).encode())
        f.write(np.ascontiguousarray(points, RADAR_DTYPE).tobytes())
        f.write(b"\n")


def count_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, >=3) points, (K, >=7) boxes -> (K,) number of points inside each box (points_in_boxes per box, after a
    cheap distance prefilter)."""
    counts = np.zeros(len(boxes), np.int64)
    if len(points) == 0:
        return counts
    xy = points[:, :2].astype(np.float64)
    for k, box in enumerate(boxes):
        near = np.flatnonzero(np.abs(xy - box[:2]).max(1) <= 0.5 * math.hypot(box[3], box[4]) + 1e-3)
        if len(near):
            counts[k] = int(points_in_boxes(points[near], box[None]).sum())
    return counts



@dataclass
class RadarTargets:
    """What a radar sweep can return from, in the radar frame: annotated boxes (K, 9) (velocity absolute, rotated
    into the radar axes) of classes cls (K,), their LiDAR visibility (K,) in [0, 1] (occluded bodies return less),
    mean cross-section rcs (K,) dBsm (None: the classes' SPECS values), and unannotated structures: scenery_boxes
    (S, 9) of `scenery`, static returns by its radar_p / radar_lambda / rcs."""

    boxes: np.ndarray
    cls: np.ndarray
    visibility: np.ndarray
    rcs: np.ndarray | None = None
    scenery_boxes: np.ndarray | None = None
    scenery: Scenery | None = None


def simulate_radar(rng: np.random.Generator, targets: RadarTargets, v_sensor: np.ndarray, weather: str) -> np.ndarray:
    """One radar sweep in its sensor frame (RADAR_DTYPE array). v_sensor: (2,) velocity of the radar over ground in
    its own axes. Each return's rcs fluctuates about its body's mean. vx, vy: radial velocity relative to the sensor;
    vx_comp, vy_comp: radial velocity over ground."""
    boxes, rcs_object, obj = _returns_per_body(rng, targets)
    n = len(obj)
    px, py = _outline_points(rng, boxes[obj])
    v_obj = boxes[obj][:, 7:9]
    rcs = rcs_object[obj] + rng.normal(0, RCS_POINT_SIGMA, n) if n else np.zeros(0)
    # Clutter: static reflections anywhere in the field of view.
    n_clutter = int(rng.poisson(6.0 * (1.3 if weather == "rain" else 1.0)))
    cr = rng.uniform(3.0, 80.0, n_clutter)
    ca = rng.uniform(-np.deg2rad(50), np.deg2rad(50), n_clutter)
    px = np.concatenate([px, cr * np.cos(ca)])
    py = np.concatenate([py, cr * np.sin(ca)])
    v_obj = np.concatenate([v_obj, np.zeros((n_clutter, 2))], 0)
    rcs = np.concatenate([rcs, rng.normal(-5.0, 3.0, n_clutter)])
    m = len(px)
    los = np.stack([px, py], 1) / np.maximum(np.hypot(px, py), 1e-6)[:, None]
    radial_abs = (v_obj * los).sum(1) + rng.normal(0, 0.08, m)
    radial_rel = ((v_obj - v_sensor[None]) * los).sum(1) + rng.normal(0, 0.08, m)
    speed = np.linalg.norm(v_obj, axis=1)
    dyn = np.where(radial_abs > 0.3, 0, np.where(radial_abs < -0.3, 2, np.where(speed > 0.5, 6, 1)))
    out = np.zeros(m, RADAR_DTYPE)
    out["x"], out["y"], out["z"] = px, py, 0.0
    out["dyn_prop"] = dyn
    out["id"] = np.arange(m)
    out["rcs"] = rcs
    out["vx"], out["vy"] = radial_rel * los[:, 0], radial_rel * los[:, 1]
    out["vx_comp"], out["vy_comp"] = radial_abs * los[:, 0], radial_abs * los[:, 1]
    out["is_quality_valid"] = 1
    out["ambig_state"] = 3
    out["x_rms"], out["y_rms"] = 5, 5
    out["invalid_state"] = 0
    out["pdh0"] = 1
    out["vx_rms"], out["vy_rms"] = 8, 8
    return out


def _returns_per_body(rng: np.random.Generator, targets: RadarTargets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which bodies (boxes, then scenery) the radar detects and how often: all bodies' boxes (B, 9), their mean rcs
    (B,) and the body of every return (n,). Detection falls with occlusion and range; the field of view narrows from
    100 m straight ahead to 30 m at 60 degrees off axis."""
    boxes_r, cls, visibility = targets.boxes, targets.cls, targets.visibility
    p_base, lam_base = spec_values(cls, "radar_p"), spec_values(cls, "radar_lambda")
    rcs_object = spec_values(cls, "rcs") if targets.rcs is None else targets.rcs
    scenery_r, scenery = targets.scenery_boxes, targets.scenery
    if scenery_r is not None and len(scenery_r):
        boxes_r = np.concatenate([boxes_r, scenery_r])
        p_base, lam_base = np.concatenate([p_base, scenery.radar_p]), np.concatenate([lam_base, scenery.radar_lambda])
        rcs_object = np.concatenate([rcs_object, scenery.rcs])
        visibility = np.concatenate([visibility, np.ones(len(scenery_r))])
    xy = boxes_r[:, :2]
    r = np.linalg.norm(xy, axis=1)
    az = np.abs(np.arctan2(xy[:, 1], xy[:, 0]))
    max_r = np.where(az < np.deg2rad(10), 100.0, np.where(az < np.deg2rad(45), 70.0,
                                                           np.where(az < np.deg2rad(60), 30.0, 0.0)))
    p_det = p_base * (0.3 + 0.7 * visibility) * np.where(r > 60, 0.7, 1.0)
    lam = lam_base * np.clip(25.0 / np.maximum(r, 1), 0.4, 2.0)
    det = (r < max_r) & (r > 1.0) & (rng.random(len(r)) < p_det)
    counts = np.where(det, 1 + rng.poisson(lam), 0)
    return boxes_r, rcs_object, np.repeat(np.arange(len(r)), counts)


def _outline_points(rng: np.random.Generator, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 9) box of every return -> x, y (n,) of points on the box outline facing the sensor, pulled a little inside
    the body, with range and bearing noise."""
    n = len(b)
    c, s = np.cos(b[:, 6]), np.sin(b[:, 6])
    l2, w2 = b[:, 3] / 2, b[:, 4] / 2
    local_sensor = np.stack([-(c * b[:, 0] + s * b[:, 1]), -(-s * b[:, 0] + c * b[:, 1])], 1)
    fx = np.abs(local_sensor[:, 0]) > l2
    fy = np.abs(local_sensor[:, 1]) > w2
    wx = fx * 2 * w2
    wy = fy * 2 * l2
    pick_x = rng.random(n) * np.maximum(wx + wy, 1e-9) < wx
    depth = rng.uniform(0.0, 0.35, n)
    u = rng.uniform(-1, 1, n)
    lx = np.where(pick_x, np.sign(local_sensor[:, 0]) * np.maximum(l2 - depth, 0), u * l2)
    ly = np.where(pick_x, u * w2, np.sign(local_sensor[:, 1]) * np.maximum(w2 - depth, 0))
    px = b[:, 0] + c * lx - s * ly
    py = b[:, 1] + s * lx + c * ly
    pr = np.hypot(px, py)
    pa = np.arctan2(py, px)
    pr = pr + rng.normal(0, 0.12, n)
    pa = pa + rng.normal(0, np.deg2rad(0.3), n)
    return pr * np.cos(pa), pr * np.sin(pa)
