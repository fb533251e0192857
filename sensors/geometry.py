"""The one set of rigid transforms and box conversions of gatefusion (numpy, float64).

Transforms are 4x4 matrices named `a_T_b`: they map coordinates in frame b into frame a, so chains read
right to left and can be checked by their names: `ego_T_lidar = inv(global_T_ego) @ global_T_egolidar @ egolidar_T_lidar`.
Quaternions are nuScenes' (w, x, y, z). Boxes are the project layout `[x, y, z, l, w, h, yaw, vx, vy]`;
the devkit's (w, l, h) sizes and quaternion rotations appear only in `box_from_nuscenes` / `box_to_nuscenes`.
"""
from __future__ import annotations

import numpy as np


def quaternion_to_matrix(q) -> np.ndarray:
    """(w, x, y, z) -> (3, 3) rotation matrix (the quaternion need not be exactly unit)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(R) -> np.ndarray:
    """(3, 3) rotation matrix -> (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    t = np.trace(R)
    if t > 0:
        s = 2.0 * np.sqrt(1.0 + t)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0] * 4
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    return q if q[0] >= 0 else -q


def yaw_to_quaternion(yaw: float) -> np.ndarray:
    """Rotation by `yaw` about +z as (w, x, y, z)."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def quaternion_yaw(q) -> float:
    """Yaw about +z of the rotation's x axis (the heading of a box or a pose)."""
    R = quaternion_to_matrix(q)
    return float(np.arctan2(R[1, 0], R[0, 0]))


def transform(rotation, translation) -> np.ndarray:
    """a_T_b from a devkit record of frame b in frame a (calibrated_sensor: ego_T_sensor; ego_pose: global_T_ego)."""
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(rotation)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert(a_T_b: np.ndarray) -> np.ndarray:
    """b_T_a of a rigid transform."""
    R, t = a_T_b[:3, :3], a_T_b[:3, 3]
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ t
    return T


def apply(a_T_b: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) points of frame b into frame a."""
    points = np.asarray(points, dtype=np.float64)
    return points @ a_T_b[:3, :3].T + a_T_b[:3, 3]


def rotate(a_T_b: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate (N, 3) direction vectors (velocities) of frame b into frame a."""
    return np.asarray(vectors, dtype=np.float64) @ a_T_b[:3, :3].T


def box_from_nuscenes(translation, size_wlh, rotation, velocity_xy, ego_T_global: np.ndarray) -> np.ndarray:
    """A devkit box in global coordinates (translation, wlh size, quaternion, global xy velocity, NaN allowed)
    -> project box (9,) in the ego frame. A NaN velocity becomes 0."""
    centre = apply(ego_T_global, np.asarray(translation)[None])[0]
    R = ego_T_global[:3, :3] @ quaternion_to_matrix(rotation)
    yaw = np.arctan2(R[1, 0], R[0, 0])
    v = np.nan_to_num(np.array([velocity_xy[0], velocity_xy[1], 0.0], dtype=np.float64))
    v = rotate(ego_T_global, v[None])[0]
    w, l, h = size_wlh
    return np.array([*centre, l, w, h, yaw, v[0], v[1]])


def box_to_nuscenes(box: np.ndarray, global_T_ego: np.ndarray) -> dict:
    """Project box (9,) in the ego frame -> devkit fields in global coordinates:
    translation, size (w, l, h), rotation (w, x, y, z), velocity (vx, vy)."""
    box = np.asarray(box, dtype=np.float64)
    centre = apply(global_T_ego, box[None, :3])[0]
    R = global_T_ego[:3, :3] @ quaternion_to_matrix(yaw_to_quaternion(box[6]))
    v = rotate(global_T_ego, np.array([[box[7], box[8], 0.0]]))[0]
    return {
        "translation": centre.tolist(),
        "size": [float(box[4]), float(box[3]), float(box[5])],
        "rotation": matrix_to_quaternion(R).tolist(),
        "velocity": [float(v[0]), float(v[1])],
    }


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(K, >=7) boxes -> (K, 8, 3) corners; the first four are the bottom face, counter-clockwise from
    front-left (+l/2, +w/2)."""
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    sx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    local = np.stack([boxes[:, 3:4] * sx, boxes[:, 4:5] * sy, boxes[:, 5:6] * sz], -1)  # (K, 8, 3)
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + boxes[:, None, :3]


def box_frame(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, >=3) points, (K, >=7) boxes -> (N, K, 3): each point in each box's own frame (x forward along its yaw, y
    to its left, z up, origin at its centre)."""
    points = np.asarray(points, dtype=np.float64)[:, None, :3]
    boxes = np.asarray(boxes, dtype=np.float64)[None]
    d = points - boxes[..., :3]
    c, s = np.cos(boxes[..., 6]), np.sin(boxes[..., 6])
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)


def points_in_boxes(points: np.ndarray, boxes: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N, >=3) points, (K, >=7) boxes -> (N, K) bool: point inside box (grown by `margin` metres)."""
    local = np.abs(box_frame(points, boxes))
    half = np.asarray(boxes, dtype=np.float64)[None, :, 3:6] / 2 + margin
    return (local <= half).all(-1)
