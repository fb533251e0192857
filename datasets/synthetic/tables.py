"""The nuScenes tables: the static rows every world shares (category, attribute, visibility, sensor), the rows of
one scene (log, calibrated sensors, samples, annotations, instances, scene) and the map, with deterministic tokens
(hashes of the seed and a key), in the devkit's field order."""
from __future__ import annotations

import datetime
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.synthetic.camera import Camera
from datasets.synthetic.config import KEYFRAME_DT
from datasets.synthetic.lidar import LIDAR_MOUNT
from datasets.synthetic.radar import RADAR_MOUNTS
from datasets.synthetic.world import Objects, yaw_transform
from sensors.geometry import matrix_to_quaternion, yaw_to_quaternion
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, LIDAR, RADARS

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map", "sample",
          "sample_annotation", "sample_data", "scene", "sensor", "visibility")

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


def token(*key) -> str:
    """Deterministic 32-hex token from a key (seed first for world-specific rows)."""
    return hashlib.md5("/".join(map(str, key)).encode()).hexdigest()


def static_token(kind: str, name: str) -> str:
    """Token of a row of a static table (category, attribute, sensor): the same in every world."""
    return token("gatefusion", kind, name)


def static_tables() -> dict[str, list[dict]]:
    sensors = [(c, "camera") for c in CAMERAS] + [(LIDAR, "lidar")] + [(r, "radar") for r in RADARS]
    return {
        "category": [{"token": static_token("category", n), "name": n, "description": d} for n, d in CATEGORIES],
        "attribute": [{"token": static_token("attribute", n), "name": n, "description": ATTRIBUTE_DESCRIPTIONS[n]}
                      for n in ATTRIBUTES],
        "visibility": [{"token": t, "level": lv, "description": d} for t, lv, d in VISIBILITY],
        "sensor": [{"token": static_token("sensor", c), "channel": c, "modality": m} for c, m in sensors],
    }


def write_map(out: Path, seed: int) -> tuple[str, str]:
    map_tok = token(seed, "map")
    rel = f"maps/{map_tok}.png"
    (out / "maps").mkdir(parents=True, exist_ok=True)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, :] = 255
    mask[:, 40:60] = 255
    Image.fromarray(mask).save(out / rel)
    return map_tok, rel


def log_row(seed: int, si: int, t_scene: int) -> dict:
    """The log row of scene `si`, which starts at t_scene (us); its logfile names the scene's sensor files."""
    stamp = datetime.datetime.fromtimestamp(t_scene / 1e6, datetime.timezone.utc)
    return {"token": token(seed, "log", si), "logfile": f"synth{seed % 1000:03d}-{stamp:%Y-%m-%d-%H-%M-%S}+0000",
            "vehicle": "synth-car", "date_captured": f"{stamp:%Y-%m-%d}", "location": "synthetic-town"}


def calibrated_sensor_rows(seed: int, si: int,
                           cameras: dict[str, Camera]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows of every sensor's calibration in scene `si` (cameras, LiDAR, radars) and each sensor's ego_T_sensor."""
    rows, ego_T_sensor = [], {}
    for channel in (*CAMERAS, LIDAR, *RADARS):
        if channel in cameras:
            T, intrinsic = cameras[channel].ego_T_cam, cameras[channel].K.tolist()
        else:
            trans, yaw_deg = LIDAR_MOUNT if channel == LIDAR else RADAR_MOUNTS[channel]
            T, intrinsic = yaw_transform(trans, np.deg2rad(yaw_deg)), []
        ego_T_sensor[channel] = T
        rows.append({
            "token": token(seed, "calibrated_sensor", si, channel), "sensor_token": static_token("sensor", channel),
            "translation": T[:3, 3].tolist(), "rotation": matrix_to_quaternion(T[:3, :3]).tolist(),
            "camera_intrinsic": intrinsic})
    return rows, ego_T_sensor


@dataclass
class Sightings:
    """What the sensors saw of the K objects at each key frame k: LiDAR visibility (K,) in [0, 1] (occlusion), the
    LiDAR points (K,) that hit each object inside its box, and the radar points (K,) inside its box (all radars)."""

    visibility: dict[int, np.ndarray] = field(default_factory=dict)
    lidar: dict[int, np.ndarray] = field(default_factory=dict)
    radar: dict[int, np.ndarray] = field(default_factory=dict)


def annotation_rows(seed: int, si: int, objects: Objects, sample_toks: list[str],
                    seen: Sightings) -> tuple[list[dict], list[dict], Counter]:
    """sample_annotation and instance rows of scene `si` (each object is annotated at every key frame of its span,
    with its visibility level and point counts) and the number of annotations per class."""
    anns, instances, class_counts = [], [], Counter()
    for j in range(len(objects.cls)):
        inst_tok = token(seed, "instance", si, j)
        first, last = (int(x) for x in objects.span[j])
        ann_toks = [token(seed, "sample_annotation", si, j, k) for k in range(first, last + 1)]
        attr = int(objects.attribute[j])
        for i, k in enumerate(range(first, last + 1)):
            box = objects.boxes(k * KEYFRAME_DT)[j]
            vis = seen.visibility[k][j]
            vis_tok = "1" if vis < 0.4 else "2" if vis < 0.6 else "3" if vis < 0.8 else "4"
            anns.append({
                "token": ann_toks[i], "sample_token": sample_toks[k], "instance_token": inst_tok,
                "visibility_token": vis_tok,
                "attribute_tokens": [static_token("attribute", ATTRIBUTES[attr])] if attr >= 0 else [],
                "translation": box[:3].tolist(), "size": [float(box[4]), float(box[3]), float(box[5])],
                "rotation": yaw_to_quaternion(float(box[6])).tolist(),
                "prev": ann_toks[i - 1] if i > 0 else "", "next": ann_toks[i + 1] if i < len(ann_toks) - 1 else "",
                "num_lidar_pts": int(seen.lidar[k][j]), "num_radar_pts": int(seen.radar[k][j])})
            class_counts[CLASSES[objects.cls[j]]] += 1
        instances.append({"token": inst_tok, "category_token": static_token("category", objects.category[j]),
                          "nbr_annotations": len(ann_toks), "first_annotation_token": ann_toks[0],
                          "last_annotation_token": ann_toks[-1]})
    return anns, instances, class_counts
