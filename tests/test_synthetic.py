"""Tests of the synthetic world generator: devkit loading/reading/evaluation, physics, conditions, faults
(determinism and the pinned world: test_synthetic_pinned.py)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud
from nuscenes.utils.geometry_utils import points_in_box
from PIL import Image

from datasets.synthetic import CONDITION_CYCLE, PRESETS, TABLES, generate, main, plan_world
from datasets.synthetic.camera import OCCLUDER_COLOUR, WEATHER_CONTRAST
from sensors.geometry import apply, invert, quaternion_yaw, transform
from sensors.names import ATTRIBUTES, CAMERAS, CLASSES, LIDAR, LIGHTINGS, RADARS, SENSORS, WEATHERS

VERSION = "v1.0-synth"
DESC = re.compile(r"^(day|dusk|night), (clear|rain|fog), traffic (light|medium|dense); synthetic scene, \d+ objects, "
                  r"\d+ roadside structures$")


@pytest.fixture(scope="module")
def nusc(tiny_world) -> NuScenes:
    return NuScenes(VERSION, str(tiny_world), verbose=False)


@pytest.fixture(scope="module")
def condition_worlds(tmp_path_factory) -> dict[str, Path]:
    """One-scene worlds with the same seed that differ only by one condition (no faults)."""
    base = replace(PRESETS["tiny"], scenes=1, samples_per_scene=4, fault_fraction=0.0, traffic="medium", seed=3)
    out = {}
    for key, lighting, weather in (("day-clear", "day", "clear"), ("night-clear", "night", "clear"),
                                   ("day-fog", "day", "fog")):
        root = tmp_path_factory.mktemp(key) / "world"
        generate(root, replace(base, lighting=lighting, weather=weather))
        out[key] = root
    return out


def test_devkit_loads_tables_and_conventions(tiny_world, nusc):
    for t in TABLES:
        assert (tiny_world / VERSION / f"{t}.json").is_file()
    assert len(nusc.scene) == 4 and len(nusc.sample) == 16
    assert len(nusc.category) == 23 and len(nusc.attribute) == 8 and len(nusc.sensor) == 12
    assert len(nusc.calibrated_sensor) == 12 * len(nusc.log)
    assert all(DESC.match(s["description"]) for s in nusc.scene)
    assert len(nusc.ego_pose) == len(nusc.sample_data)
    ego = {e["token"]: e for e in nusc.ego_pose}
    for sd in nusc.sample_data:
        assert ego[sd["ego_pose_token"]]["timestamp"] == sd["timestamp"]
        assert ego[sd["ego_pose_token"]]["translation"][2] == 0.0
    for sample in nusc.sample:
        assert sample["timestamp"] == nusc.get("sample_data", sample["data"][LIDAR])["timestamp"]
        assert set(sample["data"]) == {*CAMERAS, LIDAR, *RADARS}
    # Per-channel chains in time order; sweeps carry the next key frame's sample.
    for sample in (s for s in nusc.sample if s["next"]):
        nxt = nusc.get("sample", sample["next"])
        for channel in (LIDAR, RADARS[0]):
            sd = nusc.get("sample_data", sample["data"][channel])
            chain = []
            while sd["next"]:
                sd = nusc.get("sample_data", sd["next"])
                chain.append(sd)
                if sd["is_key_frame"]:
                    break
            assert chain[-1]["token"] == nxt["data"][channel]
            assert all(c["sample_token"] == nxt["token"] for c in chain)
            assert [c["timestamp"] for c in chain] == sorted(c["timestamp"] for c in chain)
            assert sum(not c["is_key_frame"] for c in chain) == (2 if channel == LIDAR else 1)
            assert all(c["filename"].startswith("sweeps/" if not c["is_key_frame"] else "samples/") for c in chain)
    lidar_calib = nusc.get("calibrated_sensor", nusc.get("sample_data", nusc.sample[0]["data"][LIDAR])[
        "calibrated_sensor_token"])
    assert quaternion_yaw(lidar_calib["rotation"]) == pytest.approx(-np.pi / 2)
    for inst in nusc.instance:
        assert inst["nbr_annotations"] >= 2
    for ann in nusc.sample_annotation:
        name = category_to_detection_name(ann["category_name"])
        assert name in CLASSES
        assert len(ann["attribute_tokens"]) == (0 if name in ("barrier", "traffic_cone") else 1)


def test_sensor_files_readable(tiny_world, nusc):
    faults = json.loads((tiny_world / VERSION / "synthetic_faults.json").read_text())
    assert faults and all(set(v) <= set(SENSORS) and v for v in faults.values())
    n_points = []
    for sd in nusc.sample_data:
        path = str(tiny_world / sd["filename"])
        if sd["channel"] == LIDAR:
            raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
            assert np.all(np.isin(raw[:, 4], np.arange(32)))
            pc = LidarPointCloud.from_file(path)
            assert pc.points.shape == (4, len(raw))
            if sd["is_key_frame"]:
                n_points.append(len(raw))
        elif sd["channel"] in RADARS:
            pc = RadarPointCloud.from_file(path)
            raw_n = int(Path(path).read_bytes().split(b"\nPOINTS ")[1].split(b"\n")[0])
            assert pc.points.shape[0] == 18
            assert pc.points.shape[1] in (raw_n, 0)  # every point passes the default filters; empty = dropout
            if pc.points.shape[1]:
                assert np.all(pc.points[2] == 0)
        else:
            with Image.open(path) as im:
                assert im.size == (sd["width"], sd["height"]) == PRESETS["tiny"].image_size
                im.load()
    assert 1000 < np.median(n_points) < 10000


def test_ground_truth_as_predictions_scores_one(tiny_world, nusc, tmp_path):
    splits = json.loads((tiny_world / VERSION / "splits.json").read_text())
    assert set(splits) == {"synth_train", "synth_val", "synth_all"}
    assert not set(splits["synth_train"]) & set(splits["synth_val"])
    assert sorted(splits["synth_train"] + splits["synth_val"]) == sorted(splits["synth_all"])
    val_names = set(splits["synth_val"])
    results, val_classes = {}, set()
    val_samples = {s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in val_names}
    for s in nusc.sample:
        results[s["token"]] = []
    for ann in nusc.sample_annotation:
        name = category_to_detection_name(ann["category_name"])
        if ann["sample_token"] in val_samples and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
            val_classes.add(name)
        if ann["num_lidar_pts"] + ann["num_radar_pts"] == 0:
            continue  # the evaluation drops such ground truth; as a prediction it would be a false positive
        attr = nusc.get("attribute", ann["attribute_tokens"][0])["name"] if ann["attribute_tokens"] else ""
        vel = nusc.box_velocity(ann["token"])[:2]
        results[ann["sample_token"]].append({
            "sample_token": ann["sample_token"], "translation": ann["translation"], "size": ann["size"],
            "rotation": ann["rotation"], "velocity": np.nan_to_num(vel).tolist(), "detection_name": name,
            "detection_score": 1.0, "attribute_name": attr})
    assert val_classes == set(CLASSES)
    path = tmp_path / "results.json"
    meta = {"use_camera": True, "use_lidar": True, "use_radar": True, "use_map": False, "use_external": False}
    path.write_text(json.dumps({"meta": meta, "results": results}))
    ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), eval_set="synth_val",
                       output_dir=str(tmp_path / "eval"), verbose=False)
    metrics, _ = ev.evaluate()
    assert metrics.mean_ap >= 0.99
    assert metrics.nd_score >= 0.99


def test_lidar_points_inside_annotated_boxes(tiny_world, nusc):
    checked = 0
    for sample in nusc.sample:
        sd_tok = sample["data"][LIDAR]
        path, boxes, _ = nusc.get_sample_data(sd_tok)
        pts = LidarPointCloud.from_file(path).points[:3]
        for box in boxes:
            ann = nusc.get("sample_annotation", box.token)
            inside = int(points_in_box(box, pts).sum())
            if ann["num_lidar_pts"] > 0:
                assert inside >= 0.9 * ann["num_lidar_pts"] and inside > 0
                checked += 1
            else:
                assert inside <= 1
    assert checked > 50


def test_split_stratified_over_conditions():
    plans = plan_world(replace(PRESETS["demo"], scenes=20))
    val = [p for p in plans if p.split == "val"]
    assert len(val) == 5
    assert {p.lighting for p in val} == set(LIGHTINGS) and {p.weather for p in val} == set(WEATHERS)
    assert {(p.lighting, p.weather) for p in plans} == set(CONDITION_CYCLE)
    mini = plan_world(replace(PRESETS["tiny"], version="v1.0-mini", scene_name_prefix="scene-"))
    assert {p.name for p in mini if p.split == "val"} <= {"scene-0103", "scene-0916"}
    with pytest.raises(ValueError, match="mini"):
        plan_world(replace(PRESETS["tiny"], version="v1.0-mini", scenes=11))


def test_mini_version_works_with_predefined_split(tmp_path):
    cfg = replace(PRESETS["tiny"], scenes=2, samples_per_scene=2, image_size=(64, 36), lidar_sweeps=3,
                  version="v1.0-mini", scene_name_prefix="scene-", lidar_azimuth_steps=64)
    generate(tmp_path / "w", cfg)
    nusc = NuScenes("v1.0-mini", str(tmp_path / "w"), verbose=False)
    from nuscenes.utils.splits import create_splits_scenes
    names = {s["name"] for s in nusc.scene}
    splits = create_splits_scenes()
    assert names & set(splits["mini_val"]) and names <= set(splits["mini_train"] + splits["mini_val"])
    with Image.open(tmp_path / "w" / nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])["filename"]) as im:
        assert im.size == (64, 36)


def _mean_image(root: Path, channels=("CAM_FRONT", "CAM_BACK")) -> float:
    files = [p for c in channels for p in (root / "samples" / c).glob("*.jpg")]
    return float(np.mean([np.asarray(Image.open(p), dtype=np.float64).mean() for p in files]))


def _lidar_keyframes(root: Path) -> list[np.ndarray]:
    return [np.fromfile(p, dtype=np.float32).reshape(-1, 5) for p in sorted((root / "samples" / LIDAR).glob("*"))]


def _radar_count(root: Path) -> int:
    return sum(RadarPointCloud.from_file(str(p)).points.shape[1] for c in RADARS
               for p in (root / "samples" / c).glob("*.pcd"))


def _annotations(root: Path) -> list[dict]:
    anns = json.loads((root / VERSION / "sample_annotation.json").read_text())
    inst = {i["token"]: i["category_token"] for i in json.loads((root / VERSION / "instance.json").read_text())}
    cats = {c["token"]: c["name"] for c in json.loads((root / VERSION / "category.json").read_text())}
    for a in anns:
        a["detection_name"] = category_to_detection_name(cats[inst[a["instance_token"]]])
    return anns


def test_conditions_change_sensors(condition_worlds):
    day, night, fog = condition_worlds["day-clear"], condition_worlds["night-clear"], condition_worlds["day-fog"]
    for root, want in ((day, "day, clear"), (night, "night, clear"), (fog, "day, fog")):
        assert json.loads((root / VERSION / "scene.json").read_text())[0]["description"].startswith(want)
    # Same objects in every world of the pair (only the condition differs).
    boxes = [[a["translation"] for a in json.loads((r / VERSION / "sample_annotation.json").read_text())]
             for r in (day, night, fog)]
    assert boxes[0] == boxes[1] == boxes[2]
    assert _mean_image(night) < 0.5 * _mean_image(day)
    far = [sum(int((np.linalg.norm(p[:, :2], axis=1) > 30).sum()) for p in _lidar_keyframes(r)) for r in (day, fog)]
    assert far[1] < 0.2 * far[0]
    radar = [_radar_count(r) for r in (day, fog)]
    assert abs(radar[0] - radar[1]) <= 0.15 * radar[0]


def test_world_is_a_fusion_problem(condition_worlds, tiny_world):
    """Each sensor wins somewhere and loses somewhere, measured on the annotations' point counts."""
    clear, fog = _annotations(condition_worlds["day-clear"]), _annotations(condition_worlds["day-fog"])
    anns = clear + _annotations(tiny_world)
    vehicles = ("car", "truck", "bus", "trailer", "construction_vehicle")

    def rate(rows, key):
        return np.mean([r[key] > 0 for r in rows]) if rows else np.nan

    small = [a for a in anns if a["detection_name"] in ("pedestrian", "traffic_cone", "bicycle")]
    big = [a for a in anns if a["detection_name"] in vehicles]
    assert rate(big, "num_radar_pts") > 2 * rate(small, "num_radar_pts")  # radar: vehicles, not small classes
    assert rate(small, "num_lidar_pts") > 0.7  # LiDAR sees small objects
    fog_veh = [a for a in fog if a["detection_name"] in vehicles]
    clear_veh = [a for a in clear if a["detection_name"] in vehicles]
    assert np.mean([a["num_lidar_pts"] for a in fog_veh]) < 0.5 * np.mean([a["num_lidar_pts"] for a in clear_veh])
    assert rate(fog_veh, "num_radar_pts") > 0.6 * rate(clear_veh, "num_radar_pts")  # radar: all weather


def test_lidar_density_falls_with_range_and_radar_doppler(condition_worlds):
    nusc = NuScenes(VERSION, str(condition_worlds["day-clear"]), verbose=False)
    near, far = [], []
    doppler_err, n_inside = [], 0
    for sample in nusc.sample:
        ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"][LIDAR])["ego_pose_token"])
        for ann_tok in sample["anns"]:
            ann = nusc.get("sample_annotation", ann_tok)
            if category_to_detection_name(ann["category_name"]) == "car":
                d = np.hypot(*np.subtract(ann["translation"][:2], ego["translation"][:2]))
                (near if d < 20 else far if d > 40 else []).append(ann["num_lidar_pts"])
        for channel in RADARS:
            sd = nusc.get("sample_data", sample["data"][channel])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            sensor_T_global = invert(transform(pose["rotation"], pose["translation"])
                                     @ transform(cs["rotation"], cs["translation"]))
            path, boxes, _ = nusc.get_sample_data(sd["token"])
            pc = RadarPointCloud.from_file(path).points
            for box in boxes:
                box.velocity = sensor_T_global[:3, :3] @ np.nan_to_num(nusc.box_velocity(box.token))
                flat = box.copy()
                flat.center[2], flat.wlh[2] = 0.0, 100.0
                inside = points_in_box(flat, pc[:3])
                if not inside.any() or np.linalg.norm(box.velocity[:2]) < 1.0:
                    continue
                xy = pc[:2, inside]
                los = xy / np.linalg.norm(xy, axis=0)
                measured = (pc[8:10, inside] * los).sum(0)
                expected = (box.velocity[:2, None] * los).sum(0)
                doppler_err += list(np.abs(measured - expected))
                n_inside += int(inside.sum())
    assert near and far and np.mean(near) > 8 * np.mean(far)
    assert n_inside > 5 and np.median(doppler_err) < 0.3


def test_camera_sees_far_objects_lidar_barely(tmp_path):
    """A car at 70 m covers pixels in CAM_FRONT while its LiDAR return count is tiny."""
    from datasets.synthetic import (
        CameraScene, LidarTargets, Objects, lidar_directions, make_camera, render_camera, simulate_lidar,
    )

    cfg = PRESETS["demo"]
    objs = Objects(p0=np.array([[70.0, 0.0]]), vel=np.zeros((1, 2)), size=np.array([[4.6, 1.95, 1.73]]),
                   yaw=np.zeros(1), cls=np.array([CLASSES.index("car")]), attribute=np.array([1]),
                   span=np.array([[0, 1]]), category=["vehicle.car"], colour=np.array([[60.0, 90, 160]]))
    cam = make_camera("CAM_FRONT", cfg.image_size)
    boxes = objs.boxes(0.0)
    rng = np.random.default_rng(0)
    with_car = render_camera(rng, cam, CameraScene(objs, "day", "clear"), np.eye(4), boxes, None).astype(float)
    empty = Objects(**{**objs.__dict__, "p0": np.array([[1e4, 0.0]])})
    without = render_camera(np.random.default_rng(0), cam, CameraScene(empty, "day", "clear"), np.eye(4),
                            empty.boxes(0.0), None)
    changed = (np.abs(with_car - without).sum(-1) > 60).sum()
    assert changed > 40
    dirs, ring = lidar_directions(cfg.lidar_azimuth_steps)
    lidar_T_ego = invert(transform([0.7071068, 0, 0, -0.7071068], [0.94, 0, 1.84]))
    from datasets.synthetic import boxes_in_frame
    pts, _, _ = simulate_lidar(np.random.default_rng(0), dirs, ring, LidarTargets(boxes_in_frame(boxes, lidar_T_ego),
                                                                                  objs.cls), 1.84, cfg, "clear", None)
    on_car = np.linalg.norm(apply(invert(lidar_T_ego), pts[:, :3].astype(float))[:, :2] - [70, 0], axis=1) < 3
    assert on_car.sum() < 0.2 * changed


def test_lidar_tells_a_parked_cars_front_from_its_back():
    """A car seen side-on at 10 m: returns over its front (bonnet) stay low, returns over its back reach the roof,
    so that orientation is observable without motion, as on real vehicles."""
    from datasets.synthetic import LidarTargets, lidar_directions, simulate_lidar

    cfg = PRESETS["demo"]
    dirs, ring = lidar_directions(cfg.lidar_azimuth_steps)
    car = np.array([[0.0, 10.0, -1.84 + 0.865, 4.6, 1.95, 1.73, 0.0, 0.0, 0.0]])  # sensor frame, heading +x
    pts, _, hit = simulate_lidar(np.random.default_rng(0), dirs, ring,
                                 LidarTargets(car, np.array([CLASSES.index("car")])), 1.84, cfg, "clear", None)
    on = pts[hit == 0]
    height = on[:, 2] + 1.84
    front, back = on[:, 0] > 2.3 - 0.28 * 4.6 + 0.05, on[:, 0] < 0.0
    assert front.sum() > 10 and back.sum() > 10
    assert height[front].max() < 0.55 * 1.73 + 0.05 < height[back].max() - 0.5


def test_lidar_intensity_follows_paint_not_class():
    """Two side-by-side boxes of different classes but the same white paint return the same LiDAR intensity, a
    dark one returns less, and cones stay retroreflective: intensity is no class label, as on real roads."""
    from datasets.synthetic import LidarTargets, lidar_directions, material_reflectivity, simulate_lidar

    cls = np.array([CLASSES.index(c) for c in ("car", "truck", "car", "traffic_cone")])
    colour = np.array([[230.0, 230, 230], [230, 230, 230], [30, 30, 35], [255, 120, 0]])
    refl = np.stack([material_reflectivity(np.random.default_rng(s), cls, colour) for s in range(400)])
    white_car, white_truck, dark_car, cone = refl.mean(0)
    assert abs(white_car - white_truck) < 1.5 and white_car - dark_car > 25 and cone > 100
    assert refl[:, 0].std() > 3  # the same paint still varies between objects

    cfg = PRESETS["demo"]
    dirs, ring = lidar_directions(cfg.lidar_azimuth_steps)
    boxes = np.array([[10.0, 6.0, -1.0, 4.6, 1.95, 1.73, 0.0, 0.0, 0.0],
                      [10.0, -6.0, -1.0, 4.6, 1.95, 1.73, 0.0, 0.0, 0.0]])
    painted = LidarTargets(boxes, cls[:2], np.array([45.0, 15.0]))
    pts, _, hit = simulate_lidar(np.random.default_rng(0), dirs, ring, painted, 1.84, cfg, "clear", None)
    bright, dark = pts[hit == 0, 3].mean(), pts[hit == 1, 3].mean()
    assert bright - dark > 20


def test_dark_bodies_fade_from_the_lidar_sooner_and_parked_vehicles_are_unlit():
    """A black car 45 m away returns a fraction of the LiDAR points a white one returns at the same place (received
    power ~ reflectivity / r^2), while both are fully seen at 15 m; a parked car's lights are not emissive (dark at
    night), a moving car's are."""
    from datasets.synthetic import LidarTargets, class_patterns, lidar_directions, return_probability, simulate_lidar

    p = return_probability(np.array([15.0, 45.0, 45.0]), np.array([13.0, 13.0, 45.0]), 70.0)
    assert p[0] > 0.99 and p[1] < 0.2 and p[2] > 0.95
    cfg = PRESETS["demo"]
    dirs, ring = lidar_directions(cfg.lidar_azimuth_steps)
    car = np.array([CLASSES.index("car")])
    counts = {}
    for x in (15.0, 45.0):
        box = np.array([[x, 0.0, -1.0, 4.6, 1.95, 1.73, 0.0, 0.0, 0.0]])
        for refl in (45.0, 13.0):
            _, _, hit = simulate_lidar(np.random.default_rng(0), dirs, ring, LidarTargets(box, car, np.array([refl])),
                                       1.84, cfg, "clear", None)
            counts[x, refl] = int((hit == 0).sum())
    assert counts[15.0, 13.0] > 0.9 * counts[15.0, 45.0]
    assert counts[45.0, 13.0] < 0.3 * counts[45.0, 45.0]
    emissive = {a: any(e for *_, e in class_patterns("car", ATTRIBUTES.index(a), np.zeros(3)))
                for a in ("vehicle.parked", "vehicle.moving", "vehicle.stopped")}
    assert emissive == {"vehicle.parked": False, "vehicle.moving": True, "vehicle.stopped": True}


def test_roadside_scenery_returns_points_occludes_and_shows_by_day_but_is_not_annotated():
    """Scenery is placed clear of the ego's path and of every object's trajectory; a hedge in front of a car returns
    LiDAR points that belong to no box and hides part of the car; it is drawn in the camera, with far more contrast
    by day than at night; a lamp pole gives static radar returns."""
    from datasets.synthetic import (
        CameraScene, LidarTargets, Objects, RadarTargets, Scenery, lidar_directions, make_camera, make_ego,
        make_objects, make_scenery, render_camera, simulate_lidar, simulate_radar,
    )

    cfg = PRESETS["demo"]
    for seed in range(3):
        rng = np.random.default_rng(seed)
        ego = make_ego(rng)
        objects = make_objects(rng, ego, 14, "dense", cfg)
        scenery = make_scenery(rng, ego, objects, 14)
        assert len(scenery.kind) >= 20 and set(scenery.kind) <= {"hedge", "bin", "post", "pole", "wall"}
        t = np.linspace(0, 6.5, 27)
        ex, ey, _ = ego.pose(t)
        for b in scenery.boxes:
            radius = 0.5 * np.hypot(b[3], b[4])
            assert np.min(np.hypot(ex - b[0], ey - b[1])) > radius + 2.9
            for p0, v, size in zip(objects.p0, objects.vel, objects.size):
                d = np.linalg.norm(p0 + v * t[:, None] - b[:2], axis=1).min()
                assert d > radius + 0.5 * np.hypot(size[0], size[1])

    hedge = Scenery(boxes=np.array([[12.0, 0.0, -1.84 + 0.8, 4.0, 1.6, 1.6, 0.0, 0.0, 0.0]]), kind=["hedge"],
                    colour=np.array([[55.0, 105, 45]]), reflectivity=np.array([20.0]), radar_p=np.array([0.3]),
                    radar_lambda=np.array([0.5]), rcs=np.array([-8.0]))
    car = np.array([[20.0, 0.0, -1.84 + 0.865, 4.6, 1.95, 1.73, 0.0, 0.0, 0.0]])  # sensor frame, behind the hedge
    cls = np.array([CLASSES.index("car")])
    dirs, ring = lidar_directions(cfg.lidar_azimuth_steps)
    _, vis_alone, _ = simulate_lidar(np.random.default_rng(0), dirs, ring, LidarTargets(car, cls), 1.84, cfg, "clear",
                                     None)
    with_hedge = LidarTargets(car, cls, np.array([45.0]), hedge.boxes, hedge.reflectivity)
    pts, vis, hit = simulate_lidar(np.random.default_rng(0), dirs, ring, with_hedge, 1.84, cfg, "clear", None)
    on_hedge = (np.abs(pts[:, 0] - 12.0) < 2.1) & (np.abs(pts[:, 1]) < 0.9) & (pts[:, 2] > -1.7)
    assert on_hedge.sum() > 20 and np.all(hit[on_hedge] == -1)
    assert vis_alone[0] == 1.0 and vis[0] < 0.8 and len(vis) == 1

    cam = make_camera("CAM_FRONT", cfg.image_size)
    nothing = Objects(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), np.zeros((0, 2), np.int64), [], np.zeros((0, 3)))
    shown = Scenery(**{**hedge.__dict__, "boxes": hedge.boxes + [[1.0, 0, 1.84, 0, 0, 0, 0, 0, 0]]})  # ego frame
    contrast = {}
    for lighting in ("day", "night"):
        imgs = [render_camera(np.random.default_rng(0), cam, CameraScene(nothing, lighting, "clear", scen), np.eye(4),
                              np.zeros((0, 9)), None).astype(float) for scen in (shown, None)]
        contrast[lighting] = np.abs(imgs[0] - imgs[1]).sum(-1).mean()
    assert contrast["day"] > 3 * contrast["night"] > 0

    pole = Scenery(boxes=np.array([[25.0, 0.0, 3.0, 0.3, 0.3, 6.0, 0.0, 0.0, 0.0]]), kind=["pole"],
                   colour=np.array([[120.0, 120, 125]]), reflectivity=np.array([35.0]), radar_p=np.array([1.0]),
                   radar_lambda=np.array([1.0]), rcs=np.array([5.0]))
    only_pole = RadarTargets(np.zeros((0, 9)), np.zeros(0, np.int64), np.zeros(0), None, pole.boxes, pole)
    sweeps = [simulate_radar(np.random.default_rng(s), only_pole, np.array([5.0, 0.0]), "clear") for s in range(20)]
    near = np.concatenate([p[(np.abs(p["x"] - 25.0) < 1.0) & (np.abs(p["y"]) < 1.0)] for p in sweeps])
    assert len(near) >= 20 and np.abs(near["vx_comp"]).max() < 0.5 and np.abs(near["vx"]).min() > 4.0


def test_radar_rcs_fluctuates_about_the_class_mean():
    """Returns of one truck scatter by a few dB about its own mean, which sits near the class mean."""
    from datasets.synthetic import SPECS, RadarTargets, simulate_radar

    truck = np.array([[20.0, 0.0, 1.4, 6.9, 2.5, 2.8, 0.0, 0.0, 0.0]])
    targets = RadarTargets(truck, np.array([CLASSES.index("truck")]), np.ones(1), np.array([19.0]))
    sweeps = [simulate_radar(np.random.default_rng(s), targets, np.zeros(2), "clear") for s in range(300)]
    rcs = np.concatenate([p["rcs"][(np.abs(p["x"] - 20.0) < 3.7) & (np.abs(p["y"]) < 1.5)] for p in sweeps])
    assert abs(rcs.mean() - 19.0) < 0.8 and 2.0 < rcs.std() < 4.5
    assert abs(SPECS["truck"].rcs - 16.0) < 1e-9


def _lidar_fault_shows(faulty: np.ndarray, normal: list[np.ndarray]) -> bool:
    """Whether a LiDAR key frame (N, 5) listed as faulty shows its fault against the same scene's normal key frames:
    silent (an empty file) or lost beams (a fault drops 10-24 rings: at least 8 of the rings the normal frames have
    are missing; a normal frame misses at most a few of them)."""
    if len(faulty) == 0:
        return True
    rings = set().union(*(np.unique(p[:, 4]).tolist() for p in normal))
    return len(rings - set(np.unique(faulty[:, 4]).tolist())) >= 8


def _occluder_share(image: np.ndarray, weather: str) -> float:
    """Share of the 4x4-pixel blocks of an (H, W, 3) image within 8 levels (every channel) of the occluder's colour
    as the camera records it (its deviation from the image mean scaled by the weather's contrast)."""
    H, W = image.shape[:2]
    blocks = image[:H // 4 * 4, :W // 4 * 4].reshape(H // 4, 4, W // 4, 4, 3).mean((1, 3))
    mean = image.mean()
    colour = mean + WEATHER_CONTRAST[weather] * (np.array(OCCLUDER_COLOUR) - mean)
    return float((np.abs(blocks - colour).max(-1) <= 8).mean())


def _camera_fault_shows(image: np.ndarray, neighbour: np.ndarray, weather: str) -> bool:
    """Whether a camera image (H, W, 3) shows a fault against the same camera in the scene's nearest normal key
    frame: blacked out (99% of its pixels at most 3, the neighbour's not), or occluded (a patch of the occluder's
    colour covering at least a quarter more of the image than in the neighbour; a normal frame differs from its
    neighbour by at most about a sixth, e.g. a dusk road near the occluder's colour)."""
    black = (image.max(-1) <= 3).mean() >= 0.99 and (neighbour.max(-1) <= 3).mean() < 0.5
    return black or _occluder_share(image, weather) - _occluder_share(neighbour, weather) >= 0.25


def _scene_samples(nusc: NuScenes, scene: dict) -> list[dict]:
    samples, tok = [], scene["first_sample_token"]
    while tok:
        samples.append(nusc.get("sample", tok))
        tok = samples[-1]["next"]
    return samples


def _read(root: Path, nusc: NuScenes, sample: dict, channel: str) -> np.ndarray:
    """A key frame's LiDAR points (N, 5) or camera image (H, W, 3) float64."""
    path = root / nusc.get("sample_data", sample["data"][channel])["filename"]
    if channel == LIDAR:
        return np.fromfile(path, np.float32).reshape(-1, 5)
    with Image.open(path) as im:
        return np.asarray(im, np.float64)


def _check_faults(root: Path, nusc: NuScenes) -> Counter:
    """Assert that every sample listed in synthetic_faults.json shows each of its faults in its files; count them."""
    faults = json.loads((root / VERSION / "synthetic_faults.json").read_text())
    shown = Counter()
    for scene in nusc.scene:
        samples, weather = _scene_samples(nusc, scene), scene["description"].split(", ")[1]
        normal = {s: [i for i, x in enumerate(samples) if s not in faults.get(x["token"], [])] for s in SENSORS}
        for i, sample in enumerate(samples):
            sensors = faults.get(sample["token"], [])
            if "lidar" in sensors:
                assert normal["lidar"]
                assert _lidar_fault_shows(_read(root, nusc, sample, LIDAR),
                                          [_read(root, nusc, samples[j], LIDAR) for j in normal["lidar"]])
            if "radar" in sensors:
                counts = [RadarPointCloud.from_file(str(root / nusc.get("sample_data", sample["data"][c])[
                    "filename"])).points.shape[1] for c in RADARS]
                assert 0 in counts
            if "camera" in sensors:
                j = min(normal["camera"], key=lambda j: abs(j - i))
                assert any(_camera_fault_shows(_read(root, nusc, sample, c), _read(root, nusc, samples[j], c), weather)
                           for c in CAMERAS)
            shown.update(sensors)
    assert sum(shown.values()) == sum(len(v) for v in faults.values())
    return shown


@pytest.fixture(scope="module")
def fault_world(tmp_path_factory) -> Path:
    """Four scenes with a fault each (seed 47: LiDAR lost beams at night in fog, an occluded camera by day, blacked
    out cameras at dusk in rain, a silent LiDAR)."""
    root = tmp_path_factory.mktemp("faults") / "world"
    generate(root, replace(PRESETS["tiny"], scenes=4, fault_fraction=1.0, seed=47))
    return root


def test_faults_ground_truth_and_files(tiny_world, nusc, fault_world):
    assert set(_check_faults(tiny_world, nusc)) == {"lidar", "radar"}
    assert set(_check_faults(fault_world, NuScenes(VERSION, str(fault_world), verbose=False))) == {"lidar", "camera"}


def test_fault_checks_fail_on_normal_frames(tiny_world, nusc):
    """The checks above reject what a fault does not produce: a normal key frame taken for a faulty one, a LiDAR
    frame short of a ring or two, a dark night image that is not black, the neighbour's own image."""
    faults = json.loads((tiny_world / VERSION / "synthetic_faults.json").read_text())
    n_lidar = n_camera = 0
    for scene in nusc.scene:
        samples, weather = _scene_samples(nusc, scene), scene["description"].split(", ")[1]
        lidar = [_read(tiny_world, nusc, s, LIDAR) for s in samples if "lidar" not in faults.get(s["token"], [])]
        for i, frame in enumerate(lidar):
            others = lidar[:i] + lidar[i + 1:]
            assert not _lidar_fault_shows(frame, others)
            assert not _lidar_fault_shows(frame[~np.isin(frame[:, 4], [5, 30])], others)
            assert _lidar_fault_shows(frame[~np.isin(frame[:, 4], np.arange(10, 20))], others)
            assert _lidar_fault_shows(frame[:0], others)
            n_lidar += 1
        for a, b in zip(samples[:-1], samples[1:]):
            for c in CAMERAS:
                image, neighbour = _read(tiny_world, nusc, a, c), _read(tiny_world, nusc, b, c)
                assert not _camera_fault_shows(image, neighbour, weather)
                assert not _camera_fault_shows(image, image, weather)
                assert _camera_fault_shows(np.zeros_like(image), neighbour, weather)
                if scene["description"].startswith("night"):
                    assert image.mean() < 60  # the old check took this for a fault
                n_camera += 1
    assert n_lidar >= 8 and n_camera >= 60


def test_generator_is_torch_free(tmp_path):
    """The generator needs numpy, PIL and torch-free sensors modules only: a world written from a fresh interpreter
    never imports torch (workers fork from it, and a spawned one must not pay for torch either)."""
    code = ("import sys; from dataclasses import replace; from datasets.synthetic import PRESETS, generate; "
            f"generate({str(tmp_path / 'w')!r}, replace(PRESETS['tiny'], scenes=1, samples_per_scene=2)); "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True)
    assert (tmp_path / "w" / VERSION / "sample.json").is_file()


def test_refuses_to_overwrite_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate(tmp_path / "full", PRESETS["tiny"])
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "full"), "--preset", "tiny"])
    assert "refusing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="samples_per_scene"):
        generate(tmp_path / "a", replace(PRESETS["tiny"], samples_per_scene=1))
    with pytest.raises(ValueError, match="weather"):
        generate(tmp_path / "b", replace(PRESETS["tiny"], weather="snow"))
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "c"), "--preset", "huge"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--scenes", "0"])
    assert "scenes" in capsys.readouterr().err


def test_cli_prints_summary(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "w"), "--preset", "tiny", "--scenes", "1", "--samples-per-scene", "2",
                 "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "1 scenes, 2 samples" in text and "camera 12" in text and "annotations: car" in text
