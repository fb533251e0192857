"""Synthetic world generator: writes a complete dataset in the exact nuScenes on-disk format.

The unmodified nuscenes-devkit loads, reads and evaluates what this writes, so everything downstream reads it through
the same code path as real nuScenes. One scene is one log: an ego car drives (straight or gently curving) among
constant-velocity objects of the ten detection classes and unannotated roadside scenery (hedges, bins, posts, lamp
poles, low walls, sized like the classes a sparse LiDAR mistakes them for: see SCENERY), sensed by

  * LIDAR_TOP: 32 beams (HDL-32E elevations), a vectorised ray cast against the ground plane and the object boxes
    (slab test, first hit wins, so objects occlude), intensity from the body's paint (retroreflective cones and
    barriers bright) and range, returns that fade out sooner from dark bodies (return_probability), ring index,
    `.pcd.bin`;
  * five radars: Doppler returns mostly from vehicles (rcs by size, fluctuating per object and per return),
    weak/rare for small classes, range up to 100 m,
    raw radial velocity (vx, vy) and its ego-motion compensated version (vx_comp, vy_comp), clutter, 18-field `.pcd`;
  * six cameras with nuScenes mounting and scaled intrinsics, rendered with PIL (painter's algorithm), class-specific
    colours and patterns, sky/road background with a horizon, `.jpg`.

Conditions per scene (lighting day/dusk/night, weather clear/rain/fog, traffic light/medium/dense) change the
sensors: night/dusk darken and add noise to cameras (beyond ~12 m an object shows only by its lights, which parked
vehicles have off), rain/fog shorten the LiDAR and add near spurious returns, fog washes out cameras; radar is nearly
unaffected. Short sensor-fault events (camera black/occluded, LiDAR beams lost or silent, radar dropout) are written
to `<version>/synthetic_faults.json` = {sample_token: [sensor, ...]}.

Everything is derived from (seed, scene index): tokens are hashes of the seed and a key, each scene has its own RNG
streams, so the output is byte-identical for the same seed and code whatever the number of worker processes.

CLI: python -m datasets.synthetic --out DIR [--preset tiny|demo|full] [--scenes N] [--samples-per-scene M] [--seed S]
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sensors.geometry import (
    apply, box_corners, invert, matrix_to_quaternion, points_in_boxes, quaternion_to_matrix, rotate, transform,
    yaw_to_quaternion,
)
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, LIDAR, RADARS, SENSORS

LIGHTINGS = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
TRAFFIC_LEVELS = ("light", "medium", "dense")
# Latin-square order: any three consecutive entries cover every lighting and every weather.
CONDITION_CYCLE = (
    ("day", "clear"), ("dusk", "rain"), ("night", "fog"),
    ("day", "rain"), ("dusk", "fog"), ("night", "clear"),
    ("day", "fog"), ("dusk", "clear"), ("night", "rain"),
)
MINI_TRAIN = ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100")
MINI_VAL = ("scene-0103", "scene-0916")
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0,
               "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}
ANNOTATION_RADIUS = 80.0
KEYFRAME_DT = 0.5
T0_US = 1_700_000_000_000_000


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines a world; same config => byte-identical output.

    image_size: (W, H) of every camera image. lidar_sweeps / radar_sweeps: sweeps between two key frames.
    lidar_azimuth_steps: rays per beam and revolution (32 beams). fault_fraction: share of scenes with a
    sensor-fault event. lighting / weather / traffic: force one condition for every scene (None: stratified mix).
    objects_per_traffic: (lo, hi) extra objects per traffic level, on top of one object of each class.
    """

    scenes: int = 4
    samples_per_scene: int = 4
    seed: int = 0
    version: str = "v1.0-synth"
    image_size: tuple[int, int] = (400, 225)
    lidar_sweeps: int = 2
    radar_sweeps: int = 1
    scene_name_prefix: str = "synth-"
    lidar_azimuth_steps: int = 600
    lidar_max_range: float = 70.0
    jpeg_quality: int = 85
    val_fraction: float = 0.25
    fault_fraction: float = 0.35
    objects_per_traffic: tuple[tuple[int, int], ...] = ((6, 12), (14, 22), (26, 36))
    lighting: str | None = None
    weather: str | None = None
    traffic: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the bad value."""
        def bad(msg):
            raise ValueError(f"WorldConfig: {msg}")
        if not isinstance(self.scenes, int) or self.scenes < 1:
            bad(f"scenes must be an integer >= 1, got {self.scenes!r}")
        if not isinstance(self.samples_per_scene, int) or self.samples_per_scene < 2:
            bad(f"samples_per_scene must be an integer >= 2 (every instance is annotated twice), "
                f"got {self.samples_per_scene!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad(f"seed must be an integer >= 0, got {self.seed!r}")
        w, h = self.image_size
        if not (16 <= w <= 4000 and 16 <= h <= 4000):
            bad(f"image_size must be (W, H) with 16 <= W, H <= 4000, got {self.image_size!r}")
        if not (0 <= self.lidar_sweeps <= 20 and 0 <= self.radar_sweeps <= 20):
            bad(f"lidar_sweeps / radar_sweeps must be in 0..20, got {self.lidar_sweeps!r} / {self.radar_sweeps!r}")
        if not 16 <= self.lidar_azimuth_steps <= 4000:
            bad(f"lidar_azimuth_steps must be in 16..4000, got {self.lidar_azimuth_steps!r}")
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.fault_fraction <= 1.0:
            bad(f"val_fraction must be in [0, 1) and fault_fraction in [0, 1], got {self.val_fraction!r}, "
                f"{self.fault_fraction!r}")
        if not 1 <= self.jpeg_quality <= 100:
            bad(f"jpeg_quality must be in 1..100, got {self.jpeg_quality!r}")
        if not self.version or "/" in self.version:
            bad(f"version must be a folder name, got {self.version!r}")
        for name, value, allowed in (("lighting", self.lighting, LIGHTINGS), ("weather", self.weather, WEATHERS),
                                     ("traffic", self.traffic, TRAFFIC_LEVELS)):
            if value is not None and value not in allowed:
                bad(f"{name} must be one of {allowed} or None, got {value!r}")
        if self.version.endswith("mini"):
            if self.scenes > 10:
                bad(f"a '...mini' version uses the official mini scene names: at most 10 scenes, got {self.scenes}")


PRESETS: dict[str, WorldConfig] = {
    "tiny": WorldConfig(scenes=4, samples_per_scene=4, image_size=(200, 112), lidar_azimuth_steps=360,
                        objects_per_traffic=((2, 4), (4, 6), (6, 8)), fault_fraction=0.5),
    "demo": WorldConfig(scenes=56, samples_per_scene=14, image_size=(400, 225), lidar_azimuth_steps=640),
    "full": WorldConfig(scenes=150, samples_per_scene=20, image_size=(640, 360), lidar_azimuth_steps=900,
                        lidar_sweeps=4, radar_sweeps=2),
}


# ------------------------------------------------------------------------------------------------- static world facts

@dataclass(frozen=True)
class ClassSpec:
    """How one detection class looks to every sensor. size: (l, w, h) metres; speed: (lo, hi) m/s when moving;
    reflectivity: LiDAR intensity scale (kept by RETROREFLECTIVE classes; painted bodies get theirs from their colour,
    see material_reflectivity); radar_p / radar_lambda: detection probability and extra returns; rcs: mean dBsm."""

    category: str
    size: tuple[float, float, float]
    speed: tuple[float, float]
    p_moving: float
    weight: float
    reflectivity: float
    radar_p: float
    radar_lambda: float
    rcs: float
    colour: tuple[int, int, int]


SPECS: dict[str, ClassSpec] = {
    "car": ClassSpec("vehicle.car", (4.6, 1.95, 1.73), (2.0, 12.0), 0.55, 0.34, 45, 0.92, 1.5, 8, (60, 90, 160)),
    "truck": ClassSpec("vehicle.truck", (6.9, 2.5, 2.8), (2.0, 10.0), 0.5, 0.07, 50, 0.97, 3.0, 16, (225, 225, 215)),
    "construction_vehicle": ClassSpec("vehicle.construction", (6.4, 2.8, 3.2), (0.5, 3.0), 0.3, 0.03, 55, 0.97, 2.5,
                                      15, (235, 190, 20)),
    "bus": ClassSpec("vehicle.bus.rigid", (11.0, 2.9, 3.5), (2.0, 10.0), 0.5, 0.03, 50, 0.98, 4.0, 20, (200, 40, 35)),
    "trailer": ClassSpec("vehicle.trailer", (12.0, 2.9, 3.9), (2.0, 8.0), 0.3, 0.03, 40, 0.97, 3.0, 18,
                         (130, 110, 90)),
    "barrier": ClassSpec("movable_object.barrier", (0.5, 2.5, 0.98), (0.0, 0.0), 0.0, 0.10, 70, 0.08, 0.3, 2,
                         (220, 30, 30)),
    "motorcycle": ClassSpec("vehicle.motorcycle", (2.1, 0.77, 1.47), (3.0, 12.0), 0.6, 0.04, 35, 0.5, 0.3, 2,
                            (120, 20, 25)),
    "bicycle": ClassSpec("vehicle.bicycle", (1.7, 0.6, 1.28), (2.0, 6.0), 0.6, 0.05, 30, 0.3, 0.2, -2, (30, 150, 60)),
    "pedestrian": ClassSpec("human.pedestrian.adult", (0.73, 0.67, 1.77), (0.8, 1.8), 0.6, 0.21, 25, 0.25, 0.1, -6,
                            (60, 60, 150)),
    "traffic_cone": ClassSpec("movable_object.trafficcone", (0.41, 0.41, 1.07), (0.0, 0.0), 0.0, 0.10, 120, 0.05,
                              0.0, -10, (255, 120, 0)),
}
VEHICLES = ("car", "truck", "construction_vehicle", "bus", "trailer")
CYCLES = ("motorcycle", "bicycle")

# The official v1.0 category table (name, description).
CATEGORIES = (
    ("animal", "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.construction_worker", "Construction worker"),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle, e.g. skateboard, segway."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.car", "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, SUVs."),
    ("vehicle.construction", "Vehicles primarily designed for construction. Typically very slow moving or "
                             "stationary."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly."),
    ("vehicle.trailer", "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks and "
                      "semi-tractors."),
)
ATTRIBUTE_DESCRIPTIONS = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    "vehicle.stopped": "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.",
    "pedestrian.moving": "The human is moving.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "cycle.with_rider": "There is a rider on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on the bicycle or motorcycle.",
}
VISIBILITY = (("1", "v0-40", "visibility of whole object is between 0 and 40%"),
              ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
              ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
              ("4", "v80-100", "visibility of whole object is between 80 and 100%"))

# Mounting close to real nuScenes: channel -> (translation in ego, yaw in degrees, focal length at 1600x900).
CAMERA_MOUNTS = {
    "CAM_FRONT": ((1.70, 0.02, 1.51), 0.0, 1266.0),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0, 1260.0),
    "CAM_BACK_RIGHT": ((1.04, -0.48, 1.56), -110.0, 1260.0),
    "CAM_BACK": ((0.03, 0.0, 1.57), 180.0, 809.0),
    "CAM_BACK_LEFT": ((1.04, 0.48, 1.56), 110.0, 1260.0),
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 1260.0),
}
RADAR_MOUNTS = {
    "RADAR_FRONT": ((3.41, 0.0, 0.50), 0.0),
    "RADAR_FRONT_LEFT": ((2.42, 0.80, 0.78), 88.0),
    "RADAR_FRONT_RIGHT": ((2.42, -0.80, 0.78), -88.0),
    "RADAR_BACK_LEFT": ((-0.56, 0.63, 0.53), 170.0),
    "RADAR_BACK_RIGHT": ((-0.56, -0.63, 0.53), -170.0),
}
LIDAR_MOUNT = ((0.94, 0.0, 1.84), -90.0)
LIDAR_ELEVATIONS = np.deg2rad(np.linspace(-30.67, 10.67, 32))
CAM_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # ego_R_cam at yaw 0

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


def token(*key) -> str:
    """Deterministic 32-hex token from a key (seed first for world-specific rows)."""
    return hashlib.md5("/".join(map(str, key)).encode()).hexdigest()


def static_token(kind: str, name: str) -> str:
    """Token of a row of a static table (category, attribute, sensor): the same in every world."""
    return token("gatefusion", kind, name)


def yaw_transform(translation, yaw: float) -> np.ndarray:
    """a_T_b of a frame b at `translation`, rotated by `yaw` about +z."""
    return transform(yaw_to_quaternion(yaw), translation)


# ------------------------------------------------------------------------------------------------------ file writers

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


def write_lidar_bin(path: Path, points: np.ndarray) -> None:
    """(N, 5) rows (x, y, z, intensity, ring) as raw float32; N = 0 gives a valid empty (0-byte) file."""
    np.ascontiguousarray(points, np.float32).reshape(-1, 5).tofile(path)


# ---------------------------------------------------------------------------------------------------- world planning

@dataclass(frozen=True)
class ScenePlan:
    """What the world decides about one scene before it is simulated."""

    index: int
    name: str
    lighting: str
    weather: str
    traffic: str
    split: str
    with_faults: bool


def plan_world(config: WorldConfig) -> list[ScenePlan]:
    """Conditions, names, split and fault scenes of every scene. Conditions follow CONDITION_CYCLE (shuffled);
    validation scenes are picked round-robin over the condition groups so that val covers every lighting and
    weather whenever it has at least three scenes."""
    config.validate()
    n = config.scenes
    rng = np.random.default_rng([config.seed, 1_000_003])
    order = rng.permutation(n)
    combos = [CONDITION_CYCLE[int(order[i]) % len(CONDITION_CYCLE)] for i in range(n)]
    traffic = [TRAFFIC_LEVELS[int(i)] for i in rng.choice(3, size=n, p=[0.3, 0.4, 0.3])]
    n_val = 0 if n == 1 else max(1, int(round(config.val_fraction * n)))
    groups = {c: [i for i in range(n) if combos[i] == c] for c in CONDITION_CYCLE}
    val: list[int] = []
    for r in range(n):
        for c in CONDITION_CYCLE:
            if len(val) < n_val and r < len(groups[c]):
                val.append(groups[c][r])
    n_fault = int(round(config.fault_fraction * n))
    fault_scenes = set(int(i) for i in rng.choice(n, size=n_fault, replace=False))
    if config.version.endswith("mini"):
        if n_val > len(MINI_VAL) or n - n_val > len(MINI_TRAIN):
            raise ValueError(f"WorldConfig: version {config.version!r} names scenes like the official mini split "
                             f"(8 train, 2 val) but the split has {n - n_val} train and {n_val} val scenes")
        train_names, val_names = iter(MINI_TRAIN), iter(MINI_VAL)
        names = [next(val_names) if i in val else next(train_names) for i in range(n)]
    else:
        names = [f"{config.scene_name_prefix}{i:04d}" for i in range(n)]
    return [
        ScenePlan(index=i, name=names[i], lighting=config.lighting or combos[i][0],
                  weather=config.weather or combos[i][1], traffic=config.traffic or traffic[i],
                  split="val" if i in val else "train", with_faults=i in fault_scenes)
        for i in range(n)
    ]


@dataclass
class EgoMotion:
    """Constant speed and yaw rate (a straight line or a gentle arc), ego z = 0."""

    x0: float
    y0: float
    yaw0: float
    speed: float
    yaw_rate: float

    def pose(self, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """t (T,) seconds -> x, y, yaw (T,) in the global frame."""
        t = np.asarray(t, dtype=np.float64)
        yaw = self.yaw0 + self.yaw_rate * t
        if abs(self.yaw_rate) < 1e-9:
            return self.x0 + self.speed * t * np.cos(self.yaw0), self.y0 + self.speed * t * np.sin(self.yaw0), yaw
        r = self.speed / self.yaw_rate
        return (self.x0 + r * (np.sin(yaw) - np.sin(self.yaw0)), self.y0 - r * (np.cos(yaw) - np.cos(self.yaw0)), yaw)

    def global_T_ego(self, t: float) -> np.ndarray:
        x, y, yaw = self.pose(t)
        return yaw_transform([float(x), float(y), 0.0], float(yaw))


@dataclass
class Objects:
    """K constant-velocity objects. p0: (K, 2) global xy at t = 0; vel: (K, 2); size: (K, 3) l, w, h; yaw: (K,);
    cls: (K,) index into CLASSES; attribute: (K,) index into ATTRIBUTES or -1; span: (K, 2) first/last annotated
    key-frame index; category: K category names; colour: (K, 3) body RGB; reflectivity: (K,) LiDAR intensity scale of
    the body (from its paint, see material_reflectivity), None: the class's SPECS value; rcs: (K,) radar
    cross-section (dBsm) of the object, None: the class's SPECS value."""

    p0: np.ndarray
    vel: np.ndarray
    size: np.ndarray
    yaw: np.ndarray
    cls: np.ndarray
    attribute: np.ndarray
    span: np.ndarray
    category: list[str]
    colour: np.ndarray
    reflectivity: np.ndarray | None = None
    rcs: np.ndarray | None = None

    def boxes(self, t: float) -> np.ndarray:
        """(K, 9) global boxes [x, y, z, l, w, h, yaw, vx, vy] at time t (s)."""
        xy = self.p0 + self.vel * t
        return np.concatenate([xy, self.size[:, 2:3] / 2, self.size, self.yaw[:, None], self.vel], 1)


def boxes_in_frame(boxes: np.ndarray, a_T_global: np.ndarray) -> np.ndarray:
    """(K, 9) global boxes -> frame a (a yaw-only rotation of the global frame)."""
    out = boxes.copy()
    out[:, :3] = apply(a_T_global, boxes[:, :3])
    out[:, 6] = boxes[:, 6] + math.atan2(a_T_global[1, 0], a_T_global[0, 0])
    v = np.concatenate([boxes[:, 7:9], np.zeros((len(boxes), 1))], 1)
    out[:, 7:9] = rotate(a_T_global, v)[:, :2]
    return out


def make_ego(rng: np.random.Generator) -> EgoMotion:
    speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(3.0, 10.0))
    yaw_rate = float(rng.uniform(-0.05, 0.05)) if rng.random() < 0.5 else 0.0
    return EgoMotion(float(rng.uniform(300, 1700)), float(rng.uniform(300, 1700)), float(rng.uniform(-np.pi, np.pi)),
                     speed, yaw_rate)


def _occludes(xy, radius, target_xy, target_radius, eye) -> bool:
    """Whether a disc (xy, radius) is nearer to `eye` than the target disc and overlaps it in bearing."""
    d = math.hypot(xy[0] - eye[0], xy[1] - eye[1])
    dt = math.hypot(target_xy[0] - eye[0], target_xy[1] - eye[1])
    if d >= dt:
        return False
    half = math.asin(min(1.0, radius / max(d, 1e-6))) + math.asin(min(1.0, target_radius / max(dt, 1e-6)))
    diff = math.atan2(xy[1] - eye[1], xy[0] - eye[0]) - math.atan2(target_xy[1] - eye[1], target_xy[0] - eye[0])
    return abs((diff + math.pi) % (2 * math.pi) - math.pi) < half + 0.02


def make_objects(rng: np.random.Generator, ego: EgoMotion, n_samples: int, traffic: str,
                 config: WorldConfig) -> Objects:
    """One object of every class near the ego (inside its class range and not occluded at its anchor key frame),
    then extra objects drawn by class frequency; rejection sampling keeps every trajectory clear of the ego and of
    other objects, and keeps the extras from hiding the guaranteed objects at their anchor frames."""
    key_t = np.arange(n_samples) * KEYFRAME_DT
    grid = np.linspace(0.0, key_t[-1], 4 * (n_samples - 1) + 1)
    ex, ey, _ = ego.pose(grid)
    ego_xy = np.stack([ex, ey], 1)
    kx, ky, kyaw = ego.pose(key_t)
    lo, hi = config.objects_per_traffic[TRAFFIC_LEVELS.index(traffic)]
    weights = np.array([SPECS[c].weight for c in CLASSES])
    extra = rng.choice(len(CLASSES), size=int(rng.integers(lo, hi + 1)), p=weights / weights.sum())
    wanted = [(i, True) for i in range(len(CLASSES))] + [(int(i), False) for i in extra]
    trajs, radii, rows, protected = [], [], [], []
    for ci, guaranteed in wanted:
        name = CLASSES[ci]
        spec = SPECS[name]
        for _ in range(200):
            k = int(rng.integers(n_samples))
            if guaranteed:
                r = rng.uniform(4.0, (0.75 if name in VEHICLES else 0.5) * CLASS_RANGE[name])
            else:
                r = rng.uniform(3.0, min(68.0, CLASS_RANGE[name] + 20.0))
            bearing = rng.uniform(-np.pi, np.pi)
            anchor = np.array([kx[k] + r * np.cos(kyaw[k] + bearing), ky[k] + r * np.sin(kyaw[k] + bearing)])
            size = np.array(spec.size) * rng.uniform(0.9, 1.1, 3)
            if name == "pedestrian":
                heading = rng.uniform(-np.pi, np.pi)
            elif name == "barrier":
                heading = kyaw[k] + np.pi / 2 + rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.05)
            elif name == "traffic_cone":
                heading = rng.uniform(-np.pi, np.pi)
            else:
                turn = rng.choice([0.0, np.pi]) if rng.random() < 0.85 else rng.choice([np.pi / 2, -np.pi / 2])
                heading = kyaw[k] + turn + rng.normal(0, 0.05)
            moving = rng.random() < spec.p_moving
            speed = rng.uniform(*spec.speed) if moving else 0.0
            vel = speed * np.array([np.cos(heading), np.sin(heading)])
            p0 = anchor - vel * key_t[k]
            traj = p0 + vel * grid[:, None]
            radius = 0.5 * math.hypot(size[0], size[1])
            if np.min(np.linalg.norm(traj - ego_xy, axis=1)) < radius + 2.6:
                continue
            if trajs:
                d = np.linalg.norm(np.stack(trajs) - traj[None], axis=2).min(1)
                if np.any(d < radius + np.array(radii) + 0.3):
                    continue
            if any(_occludes(p0 + vel * key_t[pk], radius, pp0 + pvel * key_t[pk], prad, (kx[pk], ky[pk]))
                   or (guaranteed and _occludes(pp0 + pvel * key_t[k], prad, anchor, radius, (kx[k], ky[k])))
                   for pk, pp0, pvel, prad in protected):
                continue
            dist = np.linalg.norm(p0 + vel * key_t[:, None] - np.stack([kx, ky], 1), axis=1)
            inside = np.flatnonzero(dist <= ANNOTATION_RADIUS)
            if len(inside) == 0 or inside[-1] - inside[0] < 1:
                continue
            trajs.append(traj)
            radii.append(radius)
            rows.append((name, p0, vel, size, heading, moving, (int(inside[0]), int(inside[-1]))))
            if guaranteed:
                protected.append((k, p0, vel, radius))
            break
        else:
            if guaranteed:
                raise RuntimeError(f"could not place a {name} in the scene (seed {config.seed}); this is a bug")
    p0s, vels, sizes, yaws, clss, attrs, spans, cats, colours = [], [], [], [], [], [], [], [], []
    for name, p0, vel, size, heading, moving, span in rows:
        spec = SPECS[name]
        category = spec.category
        if name in VEHICLES:
            attr = "vehicle.moving" if moving else ("vehicle.parked" if rng.random() < 0.75 else "vehicle.stopped")
            if name == "bus" and size[0] > 11.5 and rng.random() < 0.5:
                category = "vehicle.bus.bendy"
        elif name == "pedestrian":
            attr = "pedestrian.moving" if moving else (
                "pedestrian.standing" if rng.random() < 0.8 else "pedestrian.sitting_lying_down")
            if attr == "pedestrian.sitting_lying_down":
                size[2] *= 0.6
            u = rng.random()
            if u < 0.1:
                category, size[2] = "human.pedestrian.child", size[2] * 0.75
            elif u < 0.15:
                category = "human.pedestrian.construction_worker"
            elif u < 0.2:
                category = "human.pedestrian.police_officer"
        elif name in CYCLES:
            attr = "cycle.with_rider" if moving or rng.random() < 0.2 else "cycle.without_rider"
        else:
            attr = None
        if name == "car":
            palette = np.array([[60, 90, 160], [170, 170, 175], [140, 25, 30], [30, 30, 35], [230, 230, 230]])
            colour = palette[rng.integers(len(palette))]
        else:
            colour = np.array(spec.colour)
        p0s.append(p0), vels.append(vel), sizes.append(size), yaws.append(heading), clss.append(CLASSES.index(name))
        attrs.append(ATTRIBUTES.index(attr) if attr else -1), spans.append(span), cats.append(category)
        colours.append(colour)
    colours = np.array(colours, dtype=np.float64).reshape(-1, 3)
    clss = np.array(clss, dtype=np.int64)
    reflectivity = material_reflectivity(rng, clss, colours)
    rcs = spec_values(clss, "rcs") + rng.normal(0.0, RCS_OBJECT_SIGMA, len(clss))
    return Objects(np.array(p0s), np.array(vels), np.array(sizes), np.array(yaws), clss,
                   np.array(attrs), np.array(spans), cats, colours, reflectivity, rcs)


# Retroreflective classes keep their SPECS reflectivity; every other body reflects by its paint, so LiDAR intensity
# says little about the class (a white car and a white truck look alike to it) while the camera sees colour and
# decals: LiDAR tells where, the camera tells what, as on real roads.
RETROREFLECTIVE = ("traffic_cone", "barrier")
RCS_OBJECT_SIGMA = 3.0  # dB, per object (aspect and shape)
RCS_POINT_SIGMA = 3.0  # dB, per return (fluctuation)


def spec_values(cls: np.ndarray, field: str) -> np.ndarray:
    """(K,) class indices -> (K,) float64 values of one ClassSpec field."""
    return np.array([getattr(SPECS[CLASSES[c]], field) for c in cls], np.float64)


def material_reflectivity(rng: np.random.Generator, cls: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(K,) LiDAR intensity scale per object: 8 + 40 x the paint's albedo (mean RGB / 255) + N(0, 6) for painted
    bodies, the class value of SPECS for RETROREFLECTIVE classes."""
    albedo = colour.mean(1) / 255.0
    painted = np.clip(8.0 + 40.0 * albedo + rng.normal(0.0, 6.0, len(cls)), 3.0, 80.0)
    retro = np.array([CLASSES[c] in RETROREFLECTIVE for c in cls], bool)
    return np.where(retro, spec_values(cls, "reflectivity"), painted)


# Unannotated roadside scenery, as on real streets, sized like the classes it can be mistaken for by a sparse LiDAR
# at range: hedges like cars, bins like traffic cones, posts (signs, parking meters) like pedestrians, low walls like
# barriers, lamp poles. LiDAR returns from them look like object returns; the camera tells them apart by day (green
# leaves, grey metal, concrete: no car paint, no cone stripes), hardly at night (unlit); radar sees metal strongly
# and leaves weakly. Fields: size ranges (l, w, h) in metres, weight, LiDAR reflectivity, radar detection
# probability, extra returns, rcs (dBsm), body colour.
@dataclass(frozen=True)
class SceneryKind:
    size: tuple[tuple[float, float], tuple[float, float], tuple[float, float]]
    weight: float
    reflectivity: float
    radar_p: float
    radar_lambda: float
    rcs: float
    colour: tuple[int, int, int]


SCENERY = {
    "hedge": SceneryKind(((2.5, 5.5), (1.2, 2.2), (1.2, 2.0)), 0.3, 20.0, 0.3, 0.5, -8.0, (55, 105, 45)),
    "bin": SceneryKind(((0.45, 0.7), (0.45, 0.7), (0.9, 1.2)), 0.2, 30.0, 0.3, 0.0, -4.0, (45, 75, 55)),
    "post": SceneryKind(((0.2, 0.3), (0.2, 0.3), (1.4, 2.0)), 0.2, 35.0, 0.5, 0.0, 0.0, (150, 150, 155)),
    "pole": SceneryKind(((0.25, 0.35), (0.25, 0.35), (5.0, 8.0)), 0.15, 35.0, 0.6, 0.3, 5.0, (120, 120, 125)),
    "wall": SceneryKind(((3.0, 10.0), (0.25, 0.45), (0.8, 1.2)), 0.15, 30.0, 0.6, 1.0, 6.0, (165, 160, 150)),
}
SCENERY_PER_SCENE = (25, 45)


@dataclass
class Scenery:
    """S static unannotated structures: boxes (S, 9) global [x, y, z, l, w, h, yaw, 0, 0], kind names, colour (S, 3)
    and per-structure LiDAR reflectivity, radar detection probability, extra returns and rcs (S,)."""

    boxes: np.ndarray
    kind: list[str]
    colour: np.ndarray
    reflectivity: np.ndarray
    radar_p: np.ndarray
    radar_lambda: np.ndarray
    rcs: np.ndarray


def make_scenery(rng: np.random.Generator, ego: EgoMotion, objects: Objects, n_samples: int) -> Scenery:
    """Roadside structures along the ego's path (4.5-16 m to either side, up to 60 m ahead of or behind a point of
    it), aligned with the road, clear of the ego's path, of every object's trajectory and of each other."""
    grid = np.linspace(0.0, (n_samples - 1) * KEYFRAME_DT, 4 * (n_samples - 1) + 1)
    ex, ey, eyaw = ego.pose(grid)
    ego_xy = np.stack([ex, ey], 1)
    trajs = np.stack([objects.p0 + objects.vel * t for t in grid], 1) if len(objects.cls) else np.zeros((0, 1, 2))
    obj_r = 0.5 * np.hypot(objects.size[:, 0], objects.size[:, 1]) if len(objects.cls) else np.zeros(0)
    kinds = list(SCENERY)
    weights = np.array([SCENERY[k].weight for k in kinds])
    rows, placed = [], []
    for _ in range(int(rng.integers(SCENERY_PER_SCENE[0], SCENERY_PER_SCENE[1] + 1))):
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        spec = SCENERY[kind]
        for _ in range(50):
            i = int(rng.integers(len(grid)))
            along, side = rng.uniform(-60.0, 60.0), rng.choice([-1.0, 1.0]) * rng.uniform(4.5, 16.0)
            c, s_ = math.cos(eyaw[i]), math.sin(eyaw[i])
            xy = ego_xy[i] + along * np.array([c, s_]) + side * np.array([-s_, c])
            size = np.array([rng.uniform(*r) for r in spec.size])
            radius = 0.5 * math.hypot(size[0], size[1])
            if np.min(np.linalg.norm(ego_xy - xy, axis=1)) < radius + 3.0:
                continue
            if len(obj_r) and np.any(np.linalg.norm(trajs - xy, axis=2).min(1) < obj_r + radius + 0.3):
                continue
            if any(math.hypot(*(xy - q)) < radius + qr + 0.3 for q, qr in placed):
                continue
            yaw = eyaw[i] + rng.normal(0.0, 0.03)
            rows.append((kind, [xy[0], xy[1], size[2] / 2, *size, yaw, 0.0, 0.0]))
            placed.append((xy, radius))
            break
    names = [k for k, _ in rows]
    spec_of = lambda field: np.array([getattr(SCENERY[k], field) for k in names], np.float64)  # noqa: E731
    colour = np.array([SCENERY[k].colour for k in names], np.float64).reshape(-1, 3)
    colour = np.clip(colour * rng.uniform(0.85, 1.15, (len(names), 1)), 0, 255)
    return Scenery(np.array([b for _, b in rows], np.float64).reshape(-1, 9), names, colour,
                   np.clip(spec_of("reflectivity") + rng.normal(0.0, 5.0, len(names)), 3.0, 80.0),
                   spec_of("radar_p"), spec_of("radar_lambda"),
                   spec_of("rcs") + rng.normal(0.0, RCS_OBJECT_SIGMA, len(names)))


def make_faults(rng: np.random.Generator, n_samples: int, with_faults: bool) -> dict[int, dict]:
    """Fault events of one scene: key-frame index -> {"camera": {channel: "black"|"occluded"},
    "lidar": "silent" | ("beams", lost_rings), "radar": [channels]}. Events last 1-3 key frames."""
    faults: dict[int, dict] = {}
    if not with_faults:
        return faults
    n_events = 1 if n_samples < 8 or rng.random() < 0.6 else 2
    for _ in range(n_events):
        kind = SENSORS[int(rng.integers(3))]
        start = int(rng.integers(n_samples))
        frames = range(start, min(n_samples, start + int(rng.integers(1, 4))))
        if kind == "camera":
            mode = "black" if rng.random() < 0.5 else "occluded"
            n_cams = int(rng.integers(1, 7)) if mode == "black" else int(rng.integers(1, 4))
            detail = {CAMERAS[int(i)]: mode for i in rng.choice(6, size=n_cams, replace=False)}
        elif kind == "lidar":
            if rng.random() < 0.4:
                detail = "silent"
            else:
                n_lost = int(rng.integers(10, 25))
                first = int(rng.integers(0, 32 - n_lost + 1))
                detail = ("beams", tuple(range(first, first + n_lost)))
        else:
            n_radars = 5 if rng.random() < 0.4 else int(rng.integers(1, 5))
            detail = sorted(RADARS[int(i)] for i in rng.choice(5, size=n_radars, replace=False))
        for k in frames:
            entry = faults.setdefault(k, {})
            if kind == "camera":
                entry.setdefault("camera", {}).update(detail)
            elif kind == "radar":
                entry["radar"] = sorted(set(entry.get("radar", [])) | set(detail))
            else:
                entry["lidar"] = detail
    return faults


# ------------------------------------------------------------------------------------------------------------ LiDAR

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


GROUND_REFLECTIVITY = 12.0  # LiDAR intensity scale of the road
WHITE_REFLECTIVITY = 45.0  # a white painted body: returns out to the LiDAR's full range


def return_probability(r: np.ndarray, reflectivity: np.ndarray, max_range: float) -> np.ndarray:
    """Share of LiDAR returns detected at range r (m) from surfaces of the given intensity scale. The received
    power falls as reflectivity / r^2, so the range where returns fade grows as sqrt(reflectivity): max_range for
    white paint, 0.54 x max_range (38 m of 70) for black paint (13) and about as far for the road (12). Dark cars
    beyond ~40 m all but vanish for the LiDAR while the camera (by day) and the radar still see them."""
    fade = max_range * np.sqrt(np.maximum(reflectivity, 1e-3) / WHITE_REFLECTIVITY)
    return 1.0 / (1.0 + np.exp(np.clip((r - fade) / (0.1 * fade), -50.0, 50.0)))


def simulate_lidar(rng: np.random.Generator, dirs, ring, boxes_s, cls, height, config: WorldConfig, weather: str,
                   fault, reflectivity: np.ndarray | None = None, scenery_s: np.ndarray | None = None,
                   scenery_reflectivity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One LiDAR sweep in the sensor frame: (N, 5) float32 rows (x, y, z, intensity, ring), the per-box
    visibility (K,) in [0, 1] from occlusion (1 where no ray reaches the box) and the box each point hit (N,)
    (-1: ground, scenery or spurious). reflectivity: (K,) per-box intensity scale (None: the classes' SPECS values).
    scenery_s: (S, >=7) unannotated structures (Scenery) in the sensor frame, with their scenery_reflectivity (S,):
    they return points and occlude like the boxes."""
    K = len(boxes_s)
    per_box = spec_values(cls, "reflectivity") if reflectivity is None else np.asarray(reflectivity, np.float64)
    notches, all_boxes = front_notches(cls), np.asarray(boxes_s, np.float64)[:, :7].reshape(-1, 7)
    if scenery_s is not None and len(scenery_s):
        all_boxes = np.concatenate([all_boxes, np.asarray(scenery_s, np.float64)[:, :7]])
        per_box = np.concatenate([per_box, scenery_reflectivity])
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


# ------------------------------------------------------------------------------------------------------------ radar

def simulate_radar(rng: np.random.Generator, boxes_r: np.ndarray, cls: np.ndarray, visibility: np.ndarray,
                   v_sensor: np.ndarray, weather: str, rcs_object: np.ndarray | None = None,
                   scenery_r: np.ndarray | None = None, scenery: Scenery | None = None) -> np.ndarray:
    """One radar sweep in its sensor frame (RADAR_DTYPE array). boxes_r: (K, 9) boxes in the radar frame (velocity
    absolute, rotated into the radar axes); v_sensor: (2,) velocity of the radar over ground in its own axes;
    rcs_object: (K,) mean cross-section per box (None: the classes' SPECS values), each return fluctuates about it;
    scenery_r: (S, 9) boxes of `scenery` in the radar frame, static returns by its radar_p / radar_lambda / rcs.
    vx, vy: radial velocity relative to the sensor; vx_comp, vy_comp: radial velocity over ground."""
    p_base, lam_base = spec_values(cls, "radar_p"), spec_values(cls, "radar_lambda")
    if rcs_object is None:
        rcs_object = spec_values(cls, "rcs")
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
    obj = np.repeat(np.arange(len(r)), counts)
    n = len(obj)
    # Points on the box outline facing the sensor, pulled a little inside the body.
    b = boxes_r[obj]
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
    px, py = pr * np.cos(pa), pr * np.sin(pa)
    v_obj = b[:, 7:9]
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


# ----------------------------------------------------------------------------------------------------------- camera

LIGHT = {"day": 1.0, "dusk": 0.5, "night": 0.12}
TINT = {"day": np.array([1.0, 1.0, 1.0]), "dusk": np.array([1.0, 0.82, 0.68]), "night": np.array([0.85, 0.9, 1.1])}
SKY = {"day": (np.array([120, 170, 235]), np.array([200, 220, 240])),
       "dusk": (np.array([70, 60, 110]), np.array([235, 140, 80])),
       "night": (np.array([5, 6, 15]), np.array([20, 22, 35]))}
NOISE_SIGMA = {"day": 2.0, "dusk": 6.0, "night": 10.0}
FOG_DISTANCE = {"clear": 800.0, "rain": 140.0, "fog": 22.0}
SUN = np.array([0.3, 0.5, 0.81])
# Side faces as (bottom a, bottom b, top b, top a) corner indices of box_corners; u runs a -> b, v bottom -> top.
FACES = {"front": (0, 3, 7, 4), "back": (2, 1, 5, 6), "left": (1, 0, 4, 5), "right": (3, 2, 6, 7),
         "top": (5, 4, 7, 6)}
FACE_NORMALS = {"front": (1, 0, 0), "back": (-1, 0, 0), "left": (0, 1, 0), "right": (0, -1, 0), "top": (0, 0, 1)}


def class_patterns(name: str, attribute: int, rng_colour: np.ndarray):
    """Class-specific decals (of a CLASSES name or a SCENERY kind): list of (faces, (u0, u1, v0, v1), colour, emissive).
    Vehicles' head and tail lights are emissive (seen at night) unless the vehicle is parked."""
    dark = (35, 45, 55)
    sides = ("front", "back", "left", "right")
    p = []
    if name in ("car", "bus"):
        p.append((sides, (0.08, 0.92, 0.55, 0.88), dark, False))
    if name == "truck":
        p.append((("front", "left", "right"), (0.0, 0.25, 0.55, 0.85), dark, False))
        p.append((("left", "right"), (0.3, 1.0, 0.1, 0.25), (90, 90, 95), False))
    if name == "trailer":
        p.append((("left", "right"), (0.0, 1.0, 0.35, 0.42), (240, 240, 240), False))
    if name == "construction_vehicle":
        for i in range(0, 8, 2):
            p.append((sides, (i / 8, (i + 1) / 8, 0.0, 0.35), (20, 20, 20), False))
        p.append((sides, (0.1, 0.5, 0.6, 0.9), dark, False))
    lit = attribute != ATTRIBUTES.index("vehicle.parked")  # a parked vehicle's lights are off: dark at night
    head, tail = ((255, 250, 215), (230, 20, 20)) if lit else ((170, 170, 160), (120, 25, 25))
    if name in VEHICLES and name != "trailer":
        p.append((("front",), (0.05, 0.2, 0.25, 0.35), head, lit))
        p.append((("front",), (0.8, 0.95, 0.25, 0.35), head, lit))
    if name in VEHICLES:
        p.append((("back",), (0.05, 0.2, 0.25, 0.35), tail, lit))
        p.append((("back",), (0.8, 0.95, 0.25, 0.35), tail, lit))
    if name == "pedestrian":
        p.append((sides, (0.0, 1.0, 0.0, 0.45), (40, 40, 80), False))
        p.append((sides, (0.0, 1.0, 0.45, 0.82), tuple(int(x) for x in rng_colour), False))
        p.append((sides, (0.25, 0.75, 0.82, 1.0), (225, 185, 150), False))
    if name in CYCLES:
        p.append((("left", "right"), (0.0, 0.35, 0.0, 0.45), (15, 15, 15), False))
        p.append((("left", "right"), (0.65, 1.0, 0.0, 0.45), (15, 15, 15), False))
        if attribute == ATTRIBUTES.index("cycle.with_rider"):
            p.append((sides, (0.3, 0.7, 0.55, 1.0), (200, 170, 60), False))
        if name == "motorcycle":
            p.append((("front",), (0.3, 0.7, 0.5, 0.6), (255, 250, 215), True))
    if name == "traffic_cone":
        p.append((sides, (0.0, 1.0, 0.45, 0.65), (245, 245, 245), False))
        p.append((sides, (0.0, 1.0, 0.0, 0.08), (30, 30, 30), False))
    if name == "barrier":
        for i in range(0, 6, 2):
            p.append((sides, (i / 6, (i + 1) / 6, 0.3, 1.0), (245, 245, 245), False))
    # scenery (SCENERY): leaves, a bin's lid, a sign on a post, a lamp on a pole, a wall's coping
    if name == "hedge":
        p.append((sides + ("top",), (0.0, 1.0, 0.55, 1.0), (40, 85, 35), False))
    if name == "bin":
        p.append((sides, (0.0, 1.0, 0.85, 1.0), (30, 30, 30), False))
    if name == "post":
        p.append((sides, (0.0, 1.0, 0.75, 1.0), (30, 80, 170), False))
    if name == "pole":
        p.append((sides, (0.0, 1.0, 0.93, 1.0), (200, 200, 170), False))
    if name == "wall":
        p.append((sides, (0.0, 1.0, 0.85, 1.0), (110, 105, 100), False))
    return p


@dataclass
class Camera:
    channel: str
    ego_T_cam: np.ndarray
    K: np.ndarray
    rays_ego: np.ndarray  # (H, W, 3) unit rays of every pixel in ego axes
    cache: dict = field(default_factory=dict)


def make_camera(channel: str, image_size: tuple[int, int]) -> Camera:
    (tx, ty, tz), yaw_deg, f = CAMERA_MOUNTS[channel]
    W, H = image_size
    K = np.array([[f * W / 1600, 0, W / 2], [0, f * H / 900, H / 2], [0, 0, 1.0]])
    R = quaternion_to_matrix(yaw_to_quaternion(np.deg2rad(yaw_deg))) @ CAM_AXES
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (tx, ty, tz)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return Camera(channel, T, K, d @ R.T)


def _background_terms(cam: Camera, lighting: str, weather: str, fog_colour: np.ndarray):
    """Static parts of a camera's background: ground points (H, W, 2) in ego xy, and per-pixel scale and offset
    (H, W, 3) so that background = road_texture[..., None] * scale + offset (sky: scale 0)."""
    light, tint = LIGHT[lighting], TINT[lighting]
    cam_pos = cam.ego_T_cam[:3, 3]
    d = cam.rays_ego
    dz = d[..., 2]
    ground = dz < -1e-4
    t = np.where(ground, -cam_pos[2] / np.where(ground, dz, -1.0), 1e4)
    pe = cam_pos + d * np.where(ground, t, 0.0)[..., None]
    illum = np.full(dz.shape, light)
    if lighting != "day":
        ang = np.arctan2(pe[..., 1], pe[..., 0])
        head = 0.85 * np.exp(-t / 18.0) * np.exp(-(ang / 0.45) ** 2) * (pe[..., 0] > 0)
        illum = light + (1 - light) * np.maximum(head, 0.25 * np.exp(-t / 6.0))
    a = np.exp(-t / FOG_DISTANCE[weather])[..., None]
    scale = a * illum[..., None] * tint * np.array([1.0, 1.0, 1.03])
    top, horizon = SKY[lighting]
    e = np.clip(dz, 0, 1)[..., None] ** 0.5
    sky = (1 - e) * horizon + e * top
    if weather != "clear":
        k = 0.85 if weather == "fog" else 0.45
        sky = (1 - k) * sky + k * fog_colour
    g = ground[..., None]
    return (pe[..., :2].astype(np.float32), np.where(g, scale, 0.0).astype(np.float32),
            np.where(g, (1 - a) * fog_colour, sky).astype(np.float32))


def _clip_near(poly: np.ndarray, near: float = 0.2) -> np.ndarray:
    """Sutherland-Hodgman clip of a (P, 3) camera-frame polygon against z >= near."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)


def render_camera(rng: np.random.Generator, cam: Camera, global_T_ego: np.ndarray, boxes_e: np.ndarray,
                  objects: Objects, lighting: str, weather: str, fault: str | None,
                  scenery: Scenery | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image of the scene from one camera. boxes_e: (K, 9) boxes of `objects` in the ego frame;
    `scenery` (global boxes) is drawn with them, lit like them."""
    H, W = cam.rays_ego.shape[:2]
    if fault == "black":
        return np.zeros((H, W, 3), np.uint8)
    light, tint = LIGHT[lighting], TINT[lighting]
    fog_d = FOG_DISTANCE[weather]
    fog_colour = np.array([175.0, 175.0, 180.0]) * max(light, 0.1) * tint
    cam_pos = cam.ego_T_cam[:3, 3]
    front = abs(math.degrees(math.atan2(cam.ego_T_cam[1, 2], cam.ego_T_cam[0, 2]))) < 60
    # Background: textured road below the horizon, sky gradient above (static terms cached per camera).
    key = (lighting, weather)
    if key not in cam.cache:
        cam.cache[key] = _background_terms(cam, lighting, weather, fog_colour)
    pe_xy, scale, offset = cam.cache[key]
    pg = pe_xy @ global_T_ego[:2, :2].T.astype(np.float32) + global_T_ego[:2, 3].astype(np.float32)
    tile = (np.floor(pg[..., 0] / 4.0) + np.floor(pg[..., 1] / 4.0)) % 2
    base = 92.0 + 12.0 * tile + 6.0 * np.sin(pg[..., 0] * 0.7) * np.sin(pg[..., 1] * 0.9)
    img = base[..., None] * scale + offset
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    # Objects, far to near (painter's algorithm), faces far to near within an object.
    looks = [(CLASSES[c], int(a), col) for c, a, col in zip(objects.cls, objects.attribute, objects.colour)]
    if scenery is not None and len(scenery.kind):
        boxes_e = np.concatenate([boxes_e, boxes_in_frame(scenery.boxes, invert(global_T_ego))])
        looks += [(kind, -1, col) for kind, col in zip(scenery.kind, scenery.colour)]
    cam_T_ego = invert(cam.ego_T_cam)
    corners_e = box_corners(boxes_e[:, :7])  # (K, 8, 3)
    corners_c = corners_e @ cam_T_ego[:3, :3].T + cam_T_ego[:3, 3]
    dist = np.linalg.norm(boxes_e[:, :3] - cam_pos, axis=1)
    for k in np.argsort(-dist):
        cc = corners_c[k]
        if np.all(cc[:, 2] < 0.2) or dist[k] > 150:
            continue
        front_pts = cc[cc[:, 2] >= 0.2]
        u = front_pts[:, 0] / front_pts[:, 2] * cam.K[0, 0] + cam.K[0, 2]
        v = front_pts[:, 1] / front_pts[:, 2] * cam.K[1, 1] + cam.K[1, 2]
        if np.all(cc[:, 2] >= 0.2) and (u.max() < 0 or u.min() > W or v.max() < 0 or v.min() > H):
            continue
        name, attribute, colour = looks[k]
        yaw = boxes_e[k, 6]
        cy, sy = math.cos(yaw), math.sin(yaw)
        obj_light = light
        if lighting != "day":
            near = math.exp(-dist[k] / 12.0) * (1.0 if front else 0.6)
            obj_light = light + (1 - light) * near
        fog_a = math.exp(-dist[k] / fog_d)
        decals = class_patterns(name, attribute, colour[::-1] * 0.5 + 80)
        faces = []
        for fname, idx in FACES.items():
            nl = FACE_NORMALS[fname]
            n_e = np.array([cy * nl[0] - sy * nl[1], sy * nl[0] + cy * nl[1], nl[2]])
            centre_c = cc[list(idx)].mean(0)
            n_c = cam_T_ego[:3, :3] @ n_e
            if n_c @ centre_c >= 0:
                continue
            faces.append((np.linalg.norm(centre_c), fname, idx, n_e))
        for _, fname, idx, n_e in sorted(faces, key=lambda f: -f[0]):
            shade = 0.6 + 0.4 * max(0.0, float(n_e @ SUN))
            quads = [((0.0, 1.0, 0.0, 1.0), colour, False)]
            quads += [(reg, col, emi) for fs, reg, col, emi in decals if fname in fs]
            reg = np.array([q[0] for q in quads])  # (Q, 4) u0, u1, v0, v1
            uu = reg[:, [0, 1, 1, 0]]
            vv = reg[:, [2, 2, 3, 3]]
            weights = np.stack([(1 - vv) * (1 - uu), (1 - vv) * uu, vv * uu, vv * (1 - uu)], -1)  # (Q, 4, 4)
            polys = weights @ cc[list(idx)]  # (Q, 4, 3) corners a0, b0, b1, a1
            colours = np.array([q[1] for q in quads], dtype=np.float64)
            emissive = np.array([q[2] for q in quads])[:, None]
            colours = np.where(emissive, colours, colours * shade * obj_light * tint)
            colours = np.clip(fog_a * colours + (1 - fog_a) * fog_colour, 0, 255).astype(int).tolist()
            clipped = bool((polys[..., 2] < 0.2).any())
            z = np.maximum(polys[..., 2], 0.2)
            pu = (polys[..., 0] / z * cam.K[0, 0] + cam.K[0, 2]).tolist()
            pv = (polys[..., 1] / z * cam.K[1, 1] + cam.K[1, 2]).tolist()
            for q in range(len(quads)):
                if clipped:
                    poly = _clip_near(polys[q])
                    if len(poly) < 3:
                        continue
                    xy = list(zip((poly[:, 0] / poly[:, 2] * cam.K[0, 0] + cam.K[0, 2]).tolist(),
                                  (poly[:, 1] / poly[:, 2] * cam.K[1, 1] + cam.K[1, 2]).tolist()))
                else:
                    xy = list(zip(pu[q], pv[q]))
                draw.polygon(xy, fill=tuple(colours[q]))
    if weather == "rain":
        for _ in range(W * H // 400):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            draw.line([(x, y), (x - 1.5, y + 6)], fill=tuple(int(c) for c in fog_colour * 1.1), width=1)
    if fault == "occluded":
        for _ in range(int(rng.integers(1, 4))):
            cx, cy_ = rng.uniform(0, W), rng.uniform(0, H)
            rx, ry = rng.uniform(0.25, 0.5) * W, rng.uniform(0.3, 0.6) * H
            draw.ellipse([cx - rx, cy_ - ry, cx + rx, cy_ + ry], fill=(55, 42, 30))
    out = np.asarray(image, dtype=np.float32)
    if weather in ("rain", "fog"):
        k = 0.85 if weather == "rain" else 0.7
        out = out.mean() + k * (out - out.mean())
    if "noise" not in cam.cache:
        cam.cache["noise"] = rng.standard_normal(out.size + 4099, dtype=np.float32)
    start = int(rng.integers(4099))
    out = out + cam.cache["noise"][start:start + out.size].reshape(out.shape) * NOISE_SIGMA[lighting]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- scene generation

def _sample_data_row(tok, sample_tok, ego_tok, calib_tok, filename, key, ts, fmt, w=0, h=0) -> dict:
    return {"token": tok, "sample_token": sample_tok, "ego_pose_token": ego_tok, "calibrated_sensor_token": calib_tok,
            "timestamp": ts, "fileformat": fmt, "is_key_frame": key, "height": h, "width": w, "filename": filename,
            "prev": "", "next": ""}


def generate_scene(out: Path, config: WorldConfig, plan: ScenePlan) -> dict:
    """Simulate one scene, write its sensor files under `out`, return its table rows and statistics."""
    seed, si = config.seed, plan.index
    streams = {name: np.random.default_rng([seed, si, k]) for k, name in
               enumerate(("ego", "layout", "lidar", "radar", "camera", "faults", "scenery"))}
    n = config.samples_per_scene
    ego = make_ego(streams["ego"])
    objects = make_objects(streams["layout"], ego, n, plan.traffic, config)
    scenery = make_scenery(streams["scenery"], ego, objects, n)
    faults = make_faults(streams["faults"], n, plan.with_faults)
    t_scene = T0_US + si * 3_600_000_000
    stamp = datetime.datetime.fromtimestamp(t_scene / 1e6, datetime.timezone.utc)
    logfile = f"synth{seed % 1000:03d}-{stamp:%Y-%m-%d-%H-%M-%S}+0000"
    log_tok, scene_tok = token(seed, "log", si), token(seed, "scene", si)
    sample_toks = [token(seed, "sample", si, k) for k in range(n)]
    key_us = [t_scene + k * 500_000 for k in range(n)]

    rows: dict[str, list[dict]] = {t: [] for t in ("log", "scene", "sample", "sample_data", "ego_pose",
                                                   "sample_annotation", "instance", "calibrated_sensor")}
    rows["log"].append({"token": log_tok, "logfile": logfile, "vehicle": "synth-car",
                        "date_captured": f"{stamp:%Y-%m-%d}", "location": "synthetic-town"})
    calib: dict[str, str] = {}
    ego_T_sensor: dict[str, np.ndarray] = {}
    for channel in (*CAMERAS, LIDAR, *RADARS):
        if channel in CAMERA_MOUNTS:
            cam = make_camera(channel, config.image_size)
            T, intrinsic = cam.ego_T_cam, cam.K.tolist()
        else:
            trans, yaw_deg = LIDAR_MOUNT if channel == LIDAR else RADAR_MOUNTS[channel]
            T, intrinsic = yaw_transform(trans, np.deg2rad(yaw_deg)), []
        calib[channel] = token(seed, "calibrated_sensor", si, channel)
        ego_T_sensor[channel] = T
        rows["calibrated_sensor"].append({
            "token": calib[channel], "sensor_token": static_token("sensor", channel),
            "translation": T[:3, 3].tolist(), "rotation": matrix_to_quaternion(T[:3, :3]).tolist(),
            "camera_intrinsic": intrinsic})
    cameras = {c: make_camera(c, config.image_size) for c in CAMERAS}

    def timeline(sweeps: int) -> list[tuple[int, int, bool]]:
        """(timestamp us, sample index, is key frame) in time order; sweeps carry the next key frame's index."""
        tl = []
        for k in range(n):
            if k > 0:
                tl += [(key_us[k - 1] + round(j * 500_000 / (sweeps + 1)), k, False) for j in range(1, sweeps + 1)]
            tl.append((key_us[k], k, True))
        return tl

    files = Counter()
    nbytes = 0
    lidar_counts: dict[int, np.ndarray] = {}
    radar_counts = {k: np.zeros(len(objects.cls), np.int64) for k in range(n)}
    vis_key: dict[int, np.ndarray] = {}
    dirs, ring = lidar_directions(config.lidar_azimuth_steps)
    lidar_h = LIDAR_MOUNT[0][2]

    def add_channel(channel: str, tl, fmt: str, ext: str, produce) -> None:
        nonlocal nbytes
        prev_row = None
        for ts, k, key in tl:
            t_s = (ts - t_scene) / 1e6
            sd_tok = token(seed, "sample_data", si, channel, ts)
            ep_tok = token(seed, "ego_pose", si, channel, ts)
            global_T_ego = ego.global_T_ego(t_s)
            rows["ego_pose"].append({"token": ep_tok, "timestamp": ts,
                                     "rotation": matrix_to_quaternion(global_T_ego[:3, :3]).tolist(),
                                     "translation": global_T_ego[:3, 3].tolist()})
            rel = f"{'samples' if key else 'sweeps'}/{channel}/{logfile}__{channel}__{ts}{ext}"
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            wh = produce(path, t_s, k, key, global_T_ego)
            nbytes += path.stat().st_size
            files[channel] += 1
            row = _sample_data_row(sd_tok, sample_toks[k], ep_tok, calib[channel], rel, key, ts, fmt, *wh)
            if prev_row is not None:
                row["prev"], prev_row["next"] = prev_row["token"], sd_tok
            rows["sample_data"].append(row)
            prev_row = row

    def ego_velocity(t_s: float) -> tuple[np.ndarray, float]:
        """Ego velocity (2,) in ego axes and yaw rate."""
        return np.array([ego.speed, 0.0]), ego.yaw_rate

    def produce_lidar(path, t_s, k, key, global_T_ego):
        sensor_T_global = invert(global_T_ego @ ego_T_sensor[LIDAR])
        boxes_s = boxes_in_frame(objects.boxes(t_s), sensor_T_global)
        fault = faults.get(k, {}).get("lidar")
        pts, vis, hit = simulate_lidar(streams["lidar"], dirs, ring, boxes_s, objects.cls, lidar_h, config,
                                       plan.weather, fault, objects.reflectivity,
                                       boxes_in_frame(scenery.boxes, sensor_T_global), scenery.reflectivity)
        write_lidar_bin(path, pts)
        if key:
            vis_key[k] = vis
            lidar_counts[k] = count_own_hits(pts[:, :3], hit, boxes_s)
        return (0, 0)

    def make_produce_radar(channel):
        def produce(path, t_s, k, key, global_T_ego):
            ego_T_r = ego_T_sensor[channel]
            r_T_global = invert(global_T_ego @ ego_T_r)
            boxes_r = boxes_in_frame(objects.boxes(t_s), r_T_global)
            v_ego, w = ego_velocity(t_s)
            lever = ego_T_r[:2, 3]
            v_point = v_ego + w * np.array([-lever[1], lever[0]])
            v_sensor = ego_T_r[:2, :2].T @ v_point
            vis = vis_key.get(k, np.ones(len(objects.cls)))
            if channel in faults.get(k, {}).get("radar", ()):
                pts = np.zeros(0, RADAR_DTYPE)
            else:
                pts = simulate_radar(streams["radar"], boxes_r, objects.cls, vis, v_sensor, plan.weather,
                                     objects.rcs, boxes_in_frame(scenery.boxes, r_T_global), scenery)
            write_radar_pcd(path, pts)
            if key and len(pts) and len(objects.cls):
                xyz = np.stack([pts["x"], pts["y"], pts["z"]], 1).astype(np.float64)
                flat = apply(ego_T_r, xyz)
                flat[:, 2] = 0.0
                boxes_e = boxes_in_frame(objects.boxes(t_s), invert(global_T_ego))
                boxes_e[:, 2], boxes_e[:, 5] = 0.0, 1e3
                radar_counts[k] += count_in_boxes(flat, boxes_e)
            return (0, 0)
        return produce

    def make_produce_camera(channel):
        def produce(path, t_s, k, key, global_T_ego):
            boxes_e = boxes_in_frame(objects.boxes(t_s), invert(global_T_ego))
            fault = faults.get(k, {}).get("camera", {}).get(channel)
            img = render_camera(streams["camera"], cameras[channel], global_T_ego, boxes_e, objects, plan.lighting,
                                plan.weather, fault, scenery)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=config.jpeg_quality)
            path.write_bytes(buf.getvalue())
            return config.image_size
        return produce

    add_channel(LIDAR, timeline(config.lidar_sweeps), "pcd", ".pcd.bin", produce_lidar)
    for channel in RADARS:
        add_channel(channel, timeline(config.radar_sweeps), "pcd", ".pcd", make_produce_radar(channel))
    for channel in CAMERAS:
        add_channel(channel, [(key_us[k], k, True) for k in range(n)], "jpg", ".jpg", make_produce_camera(channel))

    for k in range(n):
        rows["sample"].append({"token": sample_toks[k], "timestamp": key_us[k],
                               "prev": sample_toks[k - 1] if k > 0 else "",
                               "next": sample_toks[k + 1] if k < n - 1 else "", "scene_token": scene_tok})
    class_counts = Counter()
    for j in range(len(objects.cls)):
        inst_tok = token(seed, "instance", si, j)
        first, last = (int(x) for x in objects.span[j])
        ann_toks = [token(seed, "sample_annotation", si, j, k) for k in range(first, last + 1)]
        attr = int(objects.attribute[j])
        for i, k in enumerate(range(first, last + 1)):
            box = objects.boxes(k * KEYFRAME_DT)[j]
            vis = vis_key[k][j]
            vis_tok = "1" if vis < 0.4 else "2" if vis < 0.6 else "3" if vis < 0.8 else "4"
            rows["sample_annotation"].append({
                "token": ann_toks[i], "sample_token": sample_toks[k], "instance_token": inst_tok,
                "visibility_token": vis_tok,
                "attribute_tokens": [static_token("attribute", ATTRIBUTES[attr])] if attr >= 0 else [],
                "translation": box[:3].tolist(), "size": [float(box[4]), float(box[3]), float(box[5])],
                "rotation": yaw_to_quaternion(float(box[6])).tolist(),
                "prev": ann_toks[i - 1] if i > 0 else "", "next": ann_toks[i + 1] if i < len(ann_toks) - 1 else "",
                "num_lidar_pts": int(lidar_counts[k][j]), "num_radar_pts": int(radar_counts[k][j])})
            class_counts[CLASSES[objects.cls[j]]] += 1
        rows["instance"].append({"token": inst_tok, "category_token": static_token("category", objects.category[j]),
                                 "nbr_annotations": len(ann_toks), "first_annotation_token": ann_toks[0],
                                 "last_annotation_token": ann_toks[-1]})
    description = (f"{plan.lighting}, {plan.weather}, traffic {plan.traffic}; synthetic scene, "
                   f"{len(objects.cls)} objects, {len(scenery.kind)} roadside structures")
    rows["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": n,
                          "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1],
                          "name": plan.name, "description": description})
    fault_gt = {}
    for k, entry in faults.items():
        fault_gt[sample_toks[k]] = [s for s in SENSORS if s in entry]
    return {"rows": rows, "faults": fault_gt, "files": dict(files), "bytes": nbytes, "classes": dict(class_counts)}


def _generate_scene_job(args) -> dict:
    out, config, plan = args
    return generate_scene(Path(out), config, plan)


# --------------------------------------------------------------------------------------------------------- the world

def _static_tables() -> dict[str, list[dict]]:
    sensors = [(c, "camera") for c in CAMERAS] + [(LIDAR, "lidar")] + [(r, "radar") for r in RADARS]
    return {
        "category": [{"token": static_token("category", n), "name": n, "description": d} for n, d in CATEGORIES],
        "attribute": [{"token": static_token("attribute", n), "name": n, "description": ATTRIBUTE_DESCRIPTIONS[n]}
                      for n in ATTRIBUTES],
        "visibility": [{"token": t, "level": lv, "description": d} for t, lv, d in VISIBILITY],
        "sensor": [{"token": static_token("sensor", c), "channel": c, "modality": m} for c, m in sensors],
    }


def _write_map(out: Path, seed: int) -> tuple[str, str]:
    map_tok = token(seed, "map")
    rel = f"maps/{map_tok}.png"
    (out / "maps").mkdir(parents=True, exist_ok=True)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, :] = 255
    mask[:, 40:60] = 255
    Image.fromarray(mask).save(out / rel)
    return map_tok, rel


def generate(out: str | Path, config: WorldConfig, workers: int = 1) -> dict:
    """Write a complete nuScenes-format world to `out` (must not exist or be empty) and return a summary:
    scenes, samples, files (per sensor and total), bytes, seconds, class counts, conditions, splits, faults."""
    start = time.perf_counter()
    config.validate()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"refusing to write into {out}: it exists and is not an empty folder "
                              f"(the synthetic generator never overwrites)")
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_world(config)
    jobs = [(str(out), config, p) for p in plans]
    if workers == 1 or len(plans) == 1:
        results = [_generate_scene_job(j) for j in jobs]
    else:
        # fork: workers need no re-import (sensors.frame pulls in torch, seconds per spawned process)
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(plans)), mp_context=ctx) as pool:
            results = list(pool.map(_generate_scene_job, jobs))
    tables = _static_tables()
    for name in ("log", "scene", "sample", "sample_data", "ego_pose", "sample_annotation", "instance",
                 "calibrated_sensor"):
        tables[name] = [row for r in results for row in r["rows"][name]]
    map_tok, map_file = _write_map(out, config.seed)
    tables["map"] = [{"token": map_tok, "log_tokens": [row["token"] for row in tables["log"]],
                      "category": "semantic_prior", "filename": map_file}]
    meta_dir = out / config.version
    meta_dir.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        (meta_dir / f"{name}.json").write_text(json.dumps(tables[name], indent=0))
    splits = {"synth_train": [p.name for p in plans if p.split == "train"],
              "synth_val": [p.name for p in plans if p.split == "val"],
              "synth_all": [p.name for p in plans]}
    (meta_dir / "splits.json").write_text(json.dumps(splits, indent=1))
    faults = {tok: sensors for r in results for tok, sensors in r["faults"].items()}
    (meta_dir / "synthetic_faults.json").write_text(json.dumps(faults, indent=1, sort_keys=True))

    files = Counter()
    for r in results:
        for channel, c in r["files"].items():
            files["camera" if channel in CAMERAS else "lidar" if channel == LIDAR else "radar"] += c
    total_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    classes = Counter()
    for r in results:
        classes.update(r["classes"])
    conditions = Counter()
    for p in plans:
        conditions.update([p.lighting, p.weather, f"traffic-{p.traffic}"])
    return {
        "dataroot": str(out), "version": config.version, "scenes": len(plans),
        "samples": len(tables["sample"]),
        "split_samples": {s: sum(config.samples_per_scene for _ in names) for s, names in splits.items()},
        "files": {**{s: files[s] for s in SENSORS}, "total": sum(1 for p in out.rglob("*") if p.is_file())},
        "bytes": total_bytes, "seconds": round(time.perf_counter() - start, 2),
        "class_counts": {c: classes[c] for c in CLASSES},
        "conditions": {c: conditions[c] for c in (*LIGHTINGS, *WEATHERS, *(f"traffic-{t}" for t in TRAFFIC_LEVELS))},
        "fault_samples": len(faults),
    }


def format_summary(summary: dict) -> str:
    lines = [
        f"world {summary['dataroot']} ({summary['version']}): {summary['scenes']} scenes, {summary['samples']} "
        f"samples (train {summary['split_samples']['synth_train']}, val {summary['split_samples']['synth_val']})",
        "files: " + ", ".join(f"{k} {v}" for k, v in summary["files"].items()),
        f"size: {summary['bytes'] / 1e6:.1f} MB, time: {summary['seconds']:.1f} s",
        "annotations: " + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items()),
        "conditions (scenes): " + ", ".join(f"{k} {v}" for k, v in summary["conditions"].items()),
        f"samples with a sensor fault: {summary['fault_samples']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output dataroot (must not exist or be empty)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--scenes", type=int, help="override the preset's number of scenes")
    parser.add_argument("--samples-per-scene", type=int, help="override the preset's key frames per scene")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    args = parser.parse_args(argv)
    config = PRESETS[args.preset]
    changes = {k: v for k, v in (("scenes", args.scenes), ("samples_per_scene", args.samples_per_scene),
                                 ("seed", args.seed)) if v is not None}
    config = replace(config, **changes)
    try:
        config.validate()
        summary = generate(args.out, config, workers=args.workers)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
