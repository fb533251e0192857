"""One scene, simulated and written: draw its world (ego, objects, scenery, faults) from the scene's own RNG streams,
run every sensor over its timeline (LiDAR, then the radars, then the cameras), write each file under the dataroot,
and return the scene's table rows and statistics. A scene depends only on (seed, scene index), so scenes can run in
any worker process in any order."""
from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.synthetic.camera import Camera, CameraScene, make_camera, render_camera
from datasets.synthetic.config import T0_US, ScenePlan, WorldConfig
from datasets.synthetic.lidar import LIDAR_MOUNT, LidarTargets, count_own_hits, lidar_directions, simulate_lidar
from datasets.synthetic.lidar import write_lidar_bin
from datasets.synthetic.radar import RADAR_DTYPE, RadarTargets, count_in_boxes, simulate_radar, write_radar_pcd
from datasets.synthetic.tables import Sightings, annotation_rows, calibrated_sensor_rows, log_row, token
from datasets.synthetic.world import (
    EgoMotion, Objects, Scenery, boxes_in_frame, make_ego, make_faults, make_objects, make_scenery,
)
from sensors.geometry import apply, invert, matrix_to_quaternion
from sensors.names import CAMERAS, LIDAR, RADARS, SENSORS

STREAMS = ("ego", "layout", "lidar", "radar", "camera", "faults", "scenery")  # RNG streams [seed, scene, index]
SCENE_TABLES = ("log", "scene", "sample", "sample_data", "ego_pose", "sample_annotation", "instance",
                "calibrated_sensor")


@dataclass
class SceneRun:
    """One scene while it is simulated: where and what (out, config, plan), its RNG streams, its drawn world (ego,
    objects, scenery, faults: key-frame index -> make_faults entry), its clock (t_scene and the key frames' key_us,
    in us), names and tokens (logfile, sample_toks), its sensors (cameras, ego_T_sensor, the LiDAR's rays dirs and
    ring), and what it has written so far: table rows, sightings of the objects, files per channel and bytes."""

    out: Path
    config: WorldConfig
    plan: ScenePlan
    streams: dict[str, np.random.Generator]
    ego: EgoMotion
    objects: Objects
    scenery: Scenery
    faults: dict[int, dict]
    t_scene: int
    key_us: list[int]
    logfile: str
    sample_toks: list[str]
    cameras: dict[str, Camera]
    ego_T_sensor: dict[str, np.ndarray]
    dirs: np.ndarray
    ring: np.ndarray
    rows: dict[str, list[dict]]
    seen: Sightings
    files: Counter = field(default_factory=Counter)
    nbytes: int = 0


@dataclass(frozen=True)
class Capture:
    """One sensor file to produce: its path, its time t_s (s since the scene's start), its sample index k (sweeps
    carry the next key frame's), whether it is a key frame, and the ego pose then."""

    path: Path
    t_s: float
    k: int
    key: bool
    global_T_ego: np.ndarray


def generate_scene(out: Path, config: WorldConfig, plan: ScenePlan) -> dict:
    """Simulate one scene, write its sensor files under `out`, return its table rows and statistics."""
    run = start_scene(out, config, plan)
    write_channel(run, LIDAR, timeline(run.key_us, config.lidar_sweeps), ("pcd", ".pcd.bin"), produce_lidar)
    for channel in RADARS:
        write_channel(run, channel, timeline(run.key_us, config.radar_sweeps), ("pcd", ".pcd"), produce_radar)
    for channel in CAMERAS:
        write_channel(run, channel, [(us, k, True) for k, us in enumerate(run.key_us)], ("jpg", ".jpg"),
                      produce_camera)
    return finish_scene(run)


def start_scene(out: Path, config: WorldConfig, plan: ScenePlan) -> SceneRun:
    """Draw the scene's world from its RNG streams and write its log and calibrated_sensor rows."""
    seed, si, n = config.seed, plan.index, config.samples_per_scene
    streams = {name: np.random.default_rng([seed, si, k]) for k, name in enumerate(STREAMS)}
    ego = make_ego(streams["ego"])
    objects = make_objects(streams["layout"], ego, n, plan.traffic, config)
    scenery = make_scenery(streams["scenery"], ego, objects, n)
    faults = make_faults(streams["faults"], n, plan.with_faults)
    t_scene = T0_US + si * 3_600_000_000
    rows: dict[str, list[dict]] = {t: [] for t in SCENE_TABLES}
    rows["log"].append(log_row(seed, si, t_scene))
    cameras = {c: make_camera(c, config.image_size) for c in CAMERAS}
    rows["calibrated_sensor"], ego_T_sensor = calibrated_sensor_rows(seed, si, cameras)
    dirs, ring = lidar_directions(config.lidar_azimuth_steps)
    seen = Sightings(radar={k: np.zeros(len(objects.cls), np.int64) for k in range(n)})
    return SceneRun(out, config, plan, streams, ego, objects, scenery, faults, t_scene,
                    [t_scene + k * 500_000 for k in range(n)], rows["log"][0]["logfile"],
                    [token(seed, "sample", si, k) for k in range(n)], cameras, ego_T_sensor, dirs, ring, rows, seen)


def timeline(key_us: list[int], sweeps: int) -> list[tuple[int, int, bool]]:
    """(timestamp us, sample index, is key frame) in time order, with `sweeps` sweeps between two key frames;
    sweeps carry the next key frame's index."""
    tl = []
    for k in range(len(key_us)):
        if k > 0:
            tl += [(key_us[k - 1] + round(j * 500_000 / (sweeps + 1)), k, False) for j in range(1, sweeps + 1)]
        tl.append((key_us[k], k, True))
    return tl


def write_channel(run: SceneRun, channel: str, tl: list[tuple[int, int, bool]], fmt_ext: tuple[str, str],
                  produce: Callable[[SceneRun, str, Capture], tuple[int, int]]) -> None:
    """Produce one channel's file at every time of its timeline `tl` (samples/ for key frames, sweeps/ otherwise)
    with `produce` (which returns the file's image (width, height), (0, 0) for point clouds), and add its ego_pose
    and sample_data rows, chained by prev/next."""
    seed, si = run.config.seed, run.plan.index
    fmt, ext = fmt_ext
    prev_row = None
    for ts, k, key in tl:
        t_s = (ts - run.t_scene) / 1e6
        sd_tok = token(seed, "sample_data", si, channel, ts)
        ep_tok = token(seed, "ego_pose", si, channel, ts)
        global_T_ego = run.ego.global_T_ego(t_s)
        run.rows["ego_pose"].append({"token": ep_tok, "timestamp": ts,
                                     "rotation": matrix_to_quaternion(global_T_ego[:3, :3]).tolist(),
                                     "translation": global_T_ego[:3, 3].tolist()})
        rel = f"{'samples' if key else 'sweeps'}/{channel}/{run.logfile}__{channel}__{ts}{ext}"
        path = run.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        w, h = produce(run, channel, Capture(path, t_s, k, key, global_T_ego))
        run.nbytes += path.stat().st_size
        run.files[channel] += 1
        row = {"token": sd_tok, "sample_token": run.sample_toks[k], "ego_pose_token": ep_tok,
               "calibrated_sensor_token": token(seed, "calibrated_sensor", si, channel), "timestamp": ts,
               "fileformat": fmt, "is_key_frame": key, "height": h, "width": w, "filename": rel, "prev": "",
               "next": ""}
        if prev_row is not None:
            row["prev"], prev_row["next"] = prev_row["token"], sd_tok
        run.rows["sample_data"].append(row)
        prev_row = row


def produce_lidar(run: SceneRun, channel: str, c: Capture) -> tuple[int, int]:
    """Write one LiDAR sweep; at key frames record each object's visibility and own LiDAR points."""
    objects, scenery = run.objects, run.scenery
    sensor_T_global = invert(c.global_T_ego @ run.ego_T_sensor[channel])
    boxes_s = boxes_in_frame(objects.boxes(c.t_s), sensor_T_global)
    targets = LidarTargets(boxes_s, objects.cls, objects.reflectivity, boxes_in_frame(scenery.boxes, sensor_T_global),
                           scenery.reflectivity)
    pts, vis, hit = simulate_lidar(run.streams["lidar"], run.dirs, run.ring, targets, LIDAR_MOUNT[0][2], run.config,
                                   run.plan.weather, run.faults.get(c.k, {}).get("lidar"))
    write_lidar_bin(c.path, pts)
    if c.key:
        run.seen.visibility[c.k] = vis
        run.seen.lidar[c.k] = count_own_hits(pts[:, :3], hit, boxes_s)
    return (0, 0)


def produce_radar(run: SceneRun, channel: str, c: Capture) -> tuple[int, int]:
    """Write one radar sweep (empty during a dropout of this radar); at key frames add its points inside each
    object's box (seen from above) to the object's radar count."""
    objects, scenery = run.objects, run.scenery
    ego_T_r = run.ego_T_sensor[channel]
    r_T_global = invert(c.global_T_ego @ ego_T_r)
    boxes_r = boxes_in_frame(objects.boxes(c.t_s), r_T_global)
    lever = ego_T_r[:2, 3]
    v_point = np.array([run.ego.speed, 0.0]) + run.ego.yaw_rate * np.array([-lever[1], lever[0]])
    v_sensor = ego_T_r[:2, :2].T @ v_point
    vis = run.seen.visibility.get(c.k, np.ones(len(objects.cls)))
    if channel in run.faults.get(c.k, {}).get("radar", ()):
        pts = np.zeros(0, RADAR_DTYPE)
    else:
        targets = RadarTargets(boxes_r, objects.cls, vis, objects.rcs, boxes_in_frame(scenery.boxes, r_T_global),
                               scenery)
        pts = simulate_radar(run.streams["radar"], targets, v_sensor, run.plan.weather)
    write_radar_pcd(c.path, pts)
    if c.key and len(pts) and len(objects.cls):
        xyz = np.stack([pts["x"], pts["y"], pts["z"]], 1).astype(np.float64)
        flat = apply(ego_T_r, xyz)
        flat[:, 2] = 0.0
        boxes_e = boxes_in_frame(objects.boxes(c.t_s), invert(c.global_T_ego))
        boxes_e[:, 2], boxes_e[:, 5] = 0.0, 1e3
        run.seen.radar[c.k] += count_in_boxes(flat, boxes_e)
    return (0, 0)


def produce_camera(run: SceneRun, channel: str, c: Capture) -> tuple[int, int]:
    """Render and write one camera image (JPEG)."""
    boxes_e = boxes_in_frame(run.objects.boxes(c.t_s), invert(c.global_T_ego))
    scene = CameraScene(run.objects, run.plan.lighting, run.plan.weather, run.scenery)
    img = render_camera(run.streams["camera"], run.cameras[channel], scene, c.global_T_ego, boxes_e,
                        run.faults.get(c.k, {}).get("camera", {}).get(channel))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=run.config.jpeg_quality)
    c.path.write_bytes(buf.getvalue())
    return run.config.image_size


def finish_scene(run: SceneRun) -> dict:
    """Add the sample, annotation, instance and scene rows; return the rows, the fault ground truth
    {sample_token: [sensor, ...]}, files per channel, bytes written and annotations per class."""
    seed, si, n, rows, toks = run.config.seed, run.plan.index, run.config.samples_per_scene, run.rows, run.sample_toks
    scene_tok = token(seed, "scene", si)
    for k in range(n):
        rows["sample"].append({"token": toks[k], "timestamp": run.key_us[k], "prev": toks[k - 1] if k > 0 else "",
                               "next": toks[k + 1] if k < n - 1 else "", "scene_token": scene_tok})
    rows["sample_annotation"], rows["instance"], class_counts = annotation_rows(seed, si, run.objects, toks, run.seen)
    plan = run.plan
    description = (f"{plan.lighting}, {plan.weather}, traffic {plan.traffic}; synthetic scene, "
                   f"{len(run.objects.cls)} objects, {len(run.scenery.kind)} roadside structures")
    rows["scene"].append({"token": scene_tok, "log_token": rows["log"][0]["token"], "nbr_samples": n,
                          "first_sample_token": toks[0], "last_sample_token": toks[-1],
                          "name": plan.name, "description": description})
    fault_gt = {toks[k]: [s for s in SENSORS if s in entry] for k, entry in run.faults.items()}
    return {"rows": rows, "faults": fault_gt, "files": dict(run.files), "bytes": run.nbytes,
            "classes": dict(class_counts)}
