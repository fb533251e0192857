"""Tests of the nuScenes-format data pipeline (datasets/splits.py, index.py, readers.py, nuscenes.py, augment.py,
datamodule.py, inspect.py) on the tiny synthetic world, checked against the devkit's own readers, boxes and
projections."""
from __future__ import annotations

import io
import json
import os
import shutil
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.augment import GlobalAugment, SeededSampler, augment_frame
from datasets.index import build_index, index_key, parse_conditions
from datasets.nuscenes import NuScenesDataset
from datasets.readers import read_radar, scale_intrinsic
from sensors.frame import collate
from sensors.geometry import apply, box_corners, invert, points_in_boxes, transform
from sensors.names import CAMERAS, CLASSES, LIDAR, RADARS

V = "v1.0-synth"


@pytest.fixture(scope="module")
def nusc(tiny_world):
    from nuscenes.nuscenes import NuScenes
    return NuScenes(version=V, dataroot=str(tiny_world), verbose=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index_cache")


@pytest.fixture(scope="module")
def ds1(tiny_world, cache) -> NuScenesDataset:
    """Key frames only (1 sweep), all scenes."""
    return NuScenesDataset(str(tiny_world), V, "synth_all", lidar_sweeps=1, radar_sweeps=1, cache_dir=str(cache))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_world) -> Path:
    """A module-level copy of the tiny world that tests copy again before corrupting files."""
    dst = tmp_path_factory.mktemp("pristine") / "world"
    shutil.copytree(tiny_world, dst, ignore=shutil.ignore_patterns(".gatefusion_cache"))
    return dst


@pytest.fixture
def world_copy(pristine, tmp_path) -> Path:
    dst = tmp_path / "world"
    shutil.copytree(pristine, dst)
    return dst


def _sample_file(root: Path, sample_token: str, channel: str) -> Path:
    sds = json.loads((root / V / "sample_data.json").read_text())
    calib = {c["token"]: c["sensor_token"] for c in json.loads((root / V / "calibrated_sensor.json").read_text())}
    sensor = {s["token"]: s["channel"] for s in json.loads((root / V / "sensor.json").read_text())}
    rows = [sd for sd in sds if sd["sample_token"] == sample_token and sd["is_key_frame"]
            and sensor[calib[sd["calibrated_sensor_token"]]] == channel]
    assert len(rows) == 1
    return root / rows[0]["filename"]


def _load(root: Path, tmp_path: Path, index: int = 0, **kw):
    ds = NuScenesDataset(str(root), V, "synth_all", lidar_sweeps=kw.pop("lidar_sweeps", 1),
                         radar_sweeps=kw.pop("radar_sweeps", 1), cache_dir=str(tmp_path / "cache"), **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = ds[index]
    return ds, frame, [str(w.message) for w in caught]


# ------------------------------------------------------------------------------------------------ frames, meta

def test_frame_contents_and_meta(ds1, nusc):
    assert len(ds1) == len(nusc.sample)
    f = ds1[0]
    assert f.lidar.points.dtype == torch.float32 and f.lidar.points.shape[1] == 5 and len(f.lidar.points) > 100
    assert f.radar.points.dtype == torch.float32 and f.radar.points.shape[1] == 7
    assert f.camera.images.shape == (6, 3, 180, 320) and f.camera.images.dtype == torch.uint8  # normalised by .to
    moved = f.camera.to("cpu").images
    assert moved.dtype == torch.float32 and torch.equal(moved, f.camera.images.float() / 255.0)
    assert f.camera.valid.all() and f.present.tolist() == [True, True, True]
    assert torch.isfinite(f.lidar.points).all() and torch.isfinite(f.radar.points).all()
    sample = nusc.get("sample", f.meta.sample_token)
    scene = nusc.get("scene", sample["scene_token"])
    lidar_sd = nusc.get("sample_data", sample["data"][LIDAR])
    assert f.meta.scene_name == scene["name"] and f.meta.timestamp == lidar_sd["timestamp"]
    assert f.meta.conditions == parse_conditions(scene["description"])
    pose = nusc.get("ego_pose", lidar_sd["ego_pose_token"])
    np.testing.assert_allclose(np.array(f.meta.global_T_ego), transform(pose["rotation"], pose["translation"]))
    assert f.gt.boxes.shape[1] == 9 and len(f.gt.labels) == len(f.gt.boxes) == len(f.gt.attributes)


def test_parse_conditions():
    assert parse_conditions("night, rain, traffic dense; synthetic scene, 23 objects") == (
        "night", "rain", "traffic-dense")
    assert parse_conditions("Night, rain, parking lot, peds") == ("night", "rain")
    assert parse_conditions("Parked truck, construction, intersection") == ("day", "clear")
    assert parse_conditions("dusk, fog") == ("dusk", "fog")


def test_faults_from_synthetic_ground_truth(ds1, tiny_world):
    truth = json.loads((tiny_world / V / "synthetic_faults.json").read_text())
    assert truth, "the tiny world should have fault events"
    for i, info in enumerate(ds1.infos):
        assert set(info["faults"]) == set(truth.get(info["token"], ()))
        if info["token"] in truth:
            assert set(truth[info["token"]]) <= set(ds1[i].meta.faults)


# ------------------------------------------------------------------------------------------------ geometry vs devkit

def test_boxes_match_devkit_and_contain_their_points(ds1, nusc):
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.geometry_utils import BoxVisibility

    checked = 0
    for i in range(0, len(ds1), 3):
        f, info = ds1[i], ds1.infos[i]
        sample = nusc.get("sample", info["token"])
        _, dev_boxes, _ = nusc.get_sample_data(sample["data"][LIDAR], box_vis_level=BoxVisibility.NONE)
        ego_T_lidar = info["lidar"]["key_T_sensor"][0]
        dev = {}
        for b in dev_boxes:
            ann = nusc.get("sample_annotation", b.token)
            name = category_to_detection_name(ann["category_name"])
            if name and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
                dev[b.token] = (b, name, ann)
        assert len(dev) == len(f.gt.boxes)
        ours = f.gt.boxes.double().numpy()
        for b, name, ann in dev.values():
            centre = apply(ego_T_lidar, b.center[None])[0]
            k = int(np.argmin(np.linalg.norm(ours[:, :3] - centre, axis=1)))
            np.testing.assert_allclose(ours[k, :3], centre, atol=1e-4)
            np.testing.assert_allclose(ours[k, 3:6], [b.wlh[1], b.wlh[0], b.wlh[2]], atol=1e-5)
            heading = ego_T_lidar[:3, :3] @ b.orientation.rotation_matrix[:, 0]
            assert abs(np.angle(np.exp(1j * (ours[k, 6] - np.arctan2(heading[1], heading[0]))))) < 1e-4
            v = nusc.box_velocity(b.token)
            v_ego = invert(np.array(f.meta.global_T_ego))[:3, :3] @ np.nan_to_num(np.array([v[0], v[1], 0.0]))
            np.testing.assert_allclose(ours[k, 7:9], v_ego[:2], atol=1e-4)
            assert CLASSES[int(f.gt.labels[k])] == name
            inside = points_in_boxes(f.lidar.points.numpy(), ours[k:k + 1], margin=1e-3)[:, 0].sum()
            assert abs(int(inside) - ann["num_lidar_pts"]) <= max(2, 0.05 * ann["num_lidar_pts"])
            checked += 1
    assert checked > 10


def test_projected_corners_match_devkit_view_points(ds1, nusc):
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points

    f, info = ds1[1], ds1.infos[1]
    sample = nusc.get("sample", info["token"])
    W, H = ds1.image_size
    checked = 0
    for c, channel in enumerate(CAMERAS):
        path, dev_boxes, K = nusc.get_sample_data(sample["data"][channel], box_vis_level=BoxVisibility.ALL)
        j = info["cameras"]["channel"].index(channel)
        w, h = info["cameras"]["width"][j], info["cameras"]["height"][j]
        cam_T_ego = torch.linalg.inv(f.camera.ego_T_cam[c].double()).numpy()
        Kc = f.camera.intrinsics[c].double().numpy()
        np.testing.assert_allclose(Kc, scale_intrinsic(K, (w, h), (W, H)), rtol=1e-6)
        ours = f.gt.boxes.double().numpy()
        for b in dev_boxes:
            dev_px = view_points(b.corners(), K, normalize=True)[:2].T  # (8, 2) at the original size
            dev_px = (dev_px + 0.5) * np.array([W / w, H / h]) - 0.5
            centre = apply(f.camera.ego_T_cam[c].double().numpy(), b.center[None])[0]
            k = int(np.argmin(np.linalg.norm(ours[:, :3] - centre, axis=1)))
            if np.linalg.norm(ours[k, :3] - centre) > 1e-3:
                continue  # an annotation without points (not in the GT)
            cam = apply(cam_T_ego, box_corners(ours[k:k + 1])[0])
            px = cam @ Kc.T
            px = px[:, :2] / px[:, 2:3]
            # same corners up to ordering: compare as sets
            d = np.linalg.norm(px[:, None] - dev_px[None], axis=-1)
            assert d.min(1).max() < 1e-2, (channel, d.min(1))
            checked += 1
    assert checked >= 3


def test_sweeps_match_devkit_multisweep(tiny_world, cache, nusc):
    from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud

    ds = NuScenesDataset(str(tiny_world), V, "synth_all", lidar_sweeps=3, radar_sweeps=2, cache_dir=str(cache))
    ds1 = NuScenesDataset(str(tiny_world), V, "synth_all", lidar_sweeps=1, radar_sweeps=1, cache_dir=str(cache))
    i = 2  # a key frame with previous sweeps
    f, info = ds[i], ds.infos[i]
    assert len(f.lidar.points) > len(ds1[i].lidar.points) and len(f.radar.points) >= len(ds1[i].radar.points)
    sample = nusc.get("sample", info["token"])
    pc, times = LidarPointCloud.from_file_multisweep(nusc, sample, LIDAR, LIDAR, nsweeps=3)
    ego_T_lidar = info["lidar"]["key_T_sensor"][0]  # the key frame's own file: ego_T_sensor
    dev = np.concatenate([apply(ego_T_lidar, pc.points[:3].T), pc.points[3:4].T, times.T], 1)
    np.testing.assert_allclose(f.lidar.points.numpy(), dev, atol=2e-3)
    lags = sorted(set(np.round(f.lidar.points[:, 4].numpy(), 4)))
    expected = sorted(np.round(info["lidar"]["time_lag"][:3], 4))
    np.testing.assert_allclose(lags, expected, atol=1e-4)
    assert lags[0] == 0.0 and all(lag >= 0 for lag in lags)
    parts = []
    for channel in RADARS:
        rpc, rt = RadarPointCloud.from_file_multisweep(nusc, sample, channel, LIDAR, nsweeps=2, min_distance=0.0)
        T = ego_T_lidar @ np.eye(4)
        vel = np.stack([rpc.points[8], rpc.points[9], np.zeros(rpc.nbr_points())], 1)
        # devkit keeps velocities in the radar frame: rotate them like our loader does, per sweep file
        fs = info["radar"]
        sel = [j for j, c in enumerate(fs["channel"]) if c == channel and fs["sweep"][j] < 2]
        n_per = [len(read_radar(tiny_world / fs["path"][j])) for j in sel]
        rot = np.concatenate([np.repeat(fs["key_T_sensor"][j][None, :3, :3], n, 0) for j, n in zip(sel, n_per)])
        parts.append(np.concatenate([apply(T, rpc.points[:3].T), rpc.points[5:6].T,
                                     np.einsum("nij,nj->ni", rot, vel)[:, :2], rt.T], 1))
    np.testing.assert_allclose(f.radar.points.numpy(), np.concatenate(parts), atol=2e-3)


def test_radar_reader_matches_devkit(tiny_world):
    from nuscenes.utils.data_classes import RadarPointCloud

    for path in sorted((tiny_world / "samples" / "RADAR_FRONT").glob("*.pcd"))[:4]:
        np.testing.assert_allclose(read_radar(path), RadarPointCloud.from_file(str(path)).points.T)


# ------------------------------------------------------------------------------------------------ splits, errors

def test_custom_splits(tiny_world, cache):
    tr = NuScenesDataset(str(tiny_world), V, "synth_train", cache_dir=str(cache))
    va = NuScenesDataset(str(tiny_world), V, "synth_val", cache_dir=str(cache))
    al = NuScenesDataset(str(tiny_world), V, "synth_all", cache_dir=str(cache))
    splits = json.loads((tiny_world / V / "splits.json").read_text())
    assert {i["scene_name"] for i in tr.infos} == set(splits["synth_train"])
    assert {i["scene_name"] for i in va.infos} == set(splits["synth_val"])
    assert {i["token"] for i in tr.infos}.isdisjoint(i["token"] for i in va.infos)
    assert len(tr) + len(va) == len(al) > 0


def test_official_mini_split_other_sizes(tmp_path):
    from datasets.synthetic import WorldConfig, generate

    root = tmp_path / "mini"
    generate(root, WorldConfig(scenes=4, samples_per_scene=3, version="v1.0-mini", image_size=(160, 96),
                               lidar_sweeps=1, radar_sweeps=3, lidar_azimuth_steps=90, seed=3))
    from nuscenes.utils.splits import create_splits_scenes
    official = create_splits_scenes()
    with pytest.warns(UserWarning, match="scenes are not in"):  # 4 of the 10 official mini scenes exist
        tr = NuScenesDataset(str(root), "v1.0-mini", "mini_train", lidar_sweeps=5, radar_sweeps=2,
                             image_size=(240, 136), cache_dir=str(tmp_path / "c"))
        va = NuScenesDataset(str(root), "v1.0-mini", "mini_val", lidar_sweeps=5, radar_sweeps=2,
                             image_size=(240, 136), cache_dir=str(tmp_path / "c"))
    assert {i["scene_name"] for i in tr.infos} <= set(official["mini_train"])
    assert {i["scene_name"] for i in va.infos} <= set(official["mini_val"])
    assert len(tr) == 9 and len(va) == 3
    f = tr[len(tr) - 1]
    assert f.camera.images.shape == (6, 3, 136, 240) and f.present.all()
    # the chain runs back over earlier key frames (devkit semantics): 5 files, one every 0.25 s
    np.testing.assert_allclose(sorted(set(f.lidar.points[:, 4].tolist())), [0, 0.25, 0.5, 0.75, 1.0], atol=1e-4)
    with pytest.raises(ValueError, match="valid splits: mini_train, mini_val"):
        NuScenesDataset(str(root), "v1.0-mini", "val", cache_dir=str(tmp_path / "c"))


def test_not_nuscenes_and_unknown_split(tmp_path, tiny_world, cache):
    (tmp_path / "v1.0-synth").mkdir()
    (tmp_path / "v1.0-synth" / "scene.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match=r"not a nuScenes dataroot.*sample\.json"):
        NuScenesDataset(str(tmp_path), V, "synth_train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NuScenesDataset(str(tmp_path / "nope"), V, "synth_train")
    with pytest.raises(ValueError, match="unknown split 'bogus'.*synth_train, synth_val, synth_all"):
        NuScenesDataset(str(tiny_world), V, "bogus", cache_dir=str(cache))
    with pytest.raises(ValueError, match="predefined split for another version"):
        NuScenesDataset(str(tiny_world), V, "mini_val", cache_dir=str(cache))


# ------------------------------------------------------------------------------------------------ bad input

def test_missing_and_silent_lidar(world_copy, tmp_path, ds1):
    token = ds1.infos[0]["token"]
    path = _sample_file(world_copy, token, LIDAR)
    path.write_bytes(b"")
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert f.present.tolist() == [True, False, True] and len(f.lidar.points) == 0
    assert "lidar" in f.meta.faults and any(str(path) in m and "empty" in m for m in msgs)
    path.unlink()
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert not f.present[1] and any(str(path) in m and "missing" in m for m in msgs)


def test_truncated_and_four_float_lidar(world_copy, tmp_path, ds1):
    path = _sample_file(world_copy, ds1.infos[0]["token"], LIDAR)
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    path.write_bytes(raw.tobytes()[:-7])
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert not f.present[1] and any(str(path) in m and "multiple of 20" in m for m in msgs)
    n = len(raw) - len(raw) % 5
    raw[:n, :4].astype(np.float32).tofile(path)  # 4 floats per point, size divisible by 20
    assert path.stat().st_size % 20 == 0
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert not f.present[1] and any(str(path) in m and "implausible" in m for m in msgs)


def test_nan_points_dropped(world_copy, tmp_path, ds1):
    """NaN/inf rows are dropped, and only they: the first four points beyond the 1 m remove-close box get a NaN or
    an inf, so the frame is the clean frame without its first four rows."""
    path = _sample_file(world_copy, ds1.infos[0]["token"], LIDAR)
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    far = np.flatnonzero((np.abs(raw[:, 0]) >= 1.0) | (np.abs(raw[:, 1]) >= 1.0))[:4]
    raw[far[:3], 0] = np.nan
    raw[far[3], 2] = np.inf
    raw.tofile(path)
    _, f, msgs = _load(world_copy, tmp_path, 0)
    clean = ds1[0].lidar.points
    assert f.present[1] and torch.isfinite(f.lidar.points).all()
    assert len(f.lidar.points) == len(clean) - 4 and torch.equal(f.lidar.points, clean[4:])
    assert any(str(path) in m and f"dropped 4 of {len(raw)} points" in m for m in msgs) and "lidar" in f.meta.faults


def test_unreadable_images(world_copy, tmp_path, ds1):
    token = ds1.infos[0]["token"]
    bad = _sample_file(world_copy, token, "CAM_BACK")
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert f.camera.valid.tolist() == [c != "CAM_BACK" for c in CAMERAS] and f.present[0]
    assert float(f.camera.images[CAMERAS.index("CAM_BACK")].abs().sum()) == 0.0
    assert any(str(bad) in m for m in msgs) and "camera" in f.meta.faults
    for channel in CAMERAS:
        _sample_file(world_copy, token, channel).write_bytes(b"")
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert not f.present[0] and not f.camera.valid.any() and f.present[1]


def test_broken_radar_headers(world_copy, tmp_path, ds1):
    token = ds1.infos[0]["token"]
    path = _sample_file(world_copy, token, "RADAR_FRONT")
    data = path.read_bytes()
    path.write_bytes(data.replace(b"VERSION 0.7", b"VERSXON 0.7"))
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert f.present[2] and any(str(path) in m and "header" in m for m in msgs) and "radar" in f.meta.faults
    for channel in RADARS:
        p = _sample_file(world_copy, token, channel)
        p.write_bytes(p.read_bytes()[:60])
    _, f, msgs = _load(world_copy, tmp_path, 0)
    assert not f.present[2] and len(f.radar.points) == 0 and f.present[1]


def test_missing_sweep_keeps_lidar(world_copy, tmp_path):
    ds, _, _ = _load(world_copy, tmp_path, 0, lidar_sweeps=3)
    i = next(k for k, info in enumerate(ds.infos) if len(info["lidar"]["path"]) >= 2)
    (world_copy / ds.infos[i]["lidar"]["path"][1]).unlink()
    _, f, msgs = _load(world_copy, tmp_path, i, lidar_sweeps=3)
    assert f.present[1] and len(f.lidar.points) > 0 and "lidar" in f.meta.faults
    assert any("missing" in m for m in msgs)


def _delete_files(root: Path, rels) -> None:
    for rel in rels:
        (root / rel).unlink(missing_ok=True)


def _all_sensor_files(root: Path) -> list[str]:
    return [sd["filename"] for sd in json.loads((root / V / "sample_data.json").read_text())]


def test_dataroot_without_sensor_files_stops_at_construction(world_copy, tmp_path):
    """Tables fine, every sensor file gone: the constructor (reached by train.py and eval.py before any step)
    raises one error naming the dataroot, split, key-frame count and each sensor with an example path."""
    from datasets.readers import MissingSensorFilesError

    _delete_files(world_copy, _all_sensor_files(world_copy))
    with pytest.raises(MissingSensorFilesError) as e:
        NuScenesDataset(str(world_copy), V, "synth_train", cache_dir=str(tmp_path / "cache"))
    msg, root = str(e.value), world_copy.resolve()
    names = set(json.loads((world_copy / V / "splits.json").read_text())["synth_train"])
    n = sum(s["nbr_samples"] for s in json.loads((world_copy / V / "scene.json").read_text()) if s["name"] in names)
    assert isinstance(e.value, ValueError) and f"dataroot {root}, version {V}, split 'synth_train'" in msg
    assert f"{n} of {n} key frames have no sensor file at all" in msg
    for sensor, channel in (("camera", "CAM_"), ("lidar", LIDAR), ("radar", "RADAR_")):
        assert f"{sensor}: {n} key frames (e.g. {root}/samples/{channel}" in msg, sensor


def test_few_missing_files_and_sweeps_only_warn(world_copy, tmp_path):
    """Up to half of the key frames without any sensor file, and missing sweeps, still only warn per file when
    loaded; one frame more than half stops the constructor."""
    from datasets.readers import MissingSensorFilesError, _key_files

    kw = {"lidar_sweeps": 3, "radar_sweeps": 3}
    ds = NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=str(tmp_path / "cache"), **kw)
    n = len(ds)
    j = next(i for i in range(n // 2 + 1, n) if not ds.infos[i]["faults"] and len(ds.infos[i]["lidar"]["path"]) > 1)
    last = ds.infos[j]
    for info in ds.infos[:n // 2]:
        _delete_files(world_copy, [rel for rels in _key_files(info).values() for rel in rels])
    sweeps = [last["lidar"]["path"][1]] + [p for p, k in zip(last["radar"]["path"], last["radar"]["sweep"]) if k]
    _delete_files(world_copy, sweeps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=str(tmp_path / "cache"), **kw)
    _, f, msgs = _load(world_copy, tmp_path, 0, **kw)
    assert f.present.tolist() == [False, False, False] and set(f.meta.faults) == {"camera", "lidar", "radar"}
    assert len(msgs) == 12 and all("missing" in m for m in msgs)  # 6 cameras, the LiDAR, 5 radars
    _, f, msgs = _load(world_copy, tmp_path, j, **kw)
    assert f.present.tolist() == [True, True, True] and {"lidar", "radar"} <= set(f.meta.faults)
    assert sorted(m.split()[2] for m in msgs) == sorted(str(world_copy.resolve() / p) for p in sweeps)
    _delete_files(world_copy, [rel for rels in _key_files(ds.infos[n // 2]).values() for rel in rels])
    with pytest.raises(MissingSensorFilesError, match=f"{n // 2 + 1} of {n} key frames"):
        NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=str(tmp_path / "cache"), **kw)


def test_train_py_stops_before_the_first_step_without_sensor_files(world_copy, tmp_path):
    """train.py on a dataroot without sensor files fails in the datamodule's set-up: the error in stderr, no step
    taken, no checkpoint written (run in tmp_path so that nothing lands in the repository)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    _delete_files(world_copy, _all_sensor_files(world_copy))
    run = subprocess.run(
        [sys.executable, str(repo / "train.py"), "fit", "--config", str(repo / "configs" / "tiny.yaml"),
         "--data.dataroot", str(world_copy), "--trainer.max_steps", "1", "--trainer.default_root_dir",
         str(tmp_path / "run")], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode != 0
    assert "MissingSensorFilesError" in run.stderr and f"dataroot {world_copy.resolve()}" in run.stderr, run.stderr
    assert "key frames have no sensor file at all" in run.stderr
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.csv"))


# ------------------------------------------------------------------------------------------------ collate, augment

def test_collate_frames_with_different_point_counts(ds1):
    frames = [ds1[0], ds1[5]]
    assert len(frames[0].lidar.points) != len(frames[1].lidar.points)
    b = collate(frames)
    assert len(b) == 2 and b.camera.images.shape[:2] == (2, 6)
    assert b.lidar.batch_index.bincount().tolist() == [len(f.lidar.points) for f in frames]
    assert len(b.radar.points) == sum(len(f.radar.points) for f in frames)
    assert [m.sample_token for m in b.meta] == [f.meta.sample_token for f in frames]


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_keeps_points_in_boxes_and_projections(ds1, flip):
    f = ds1[3]
    g = augment_frame(f, theta=0.7, scale=1.04, flip=flip)
    before = points_in_boxes(f.lidar.points.numpy(), f.gt.boxes.numpy(), 1e-3)
    after = points_in_boxes(g.lidar.points.numpy(), g.gt.boxes.numpy(), 5e-3)
    assert before.sum() > 20 and (before <= after).all()
    assert (after.sum(0) - before.sum(0)).max() <= 2
    np.testing.assert_allclose(g.gt.boxes[:, 7:9].norm(dim=1), 1.04 * f.gt.boxes[:, 7:9].norm(dim=1), atol=1e-4)
    for c in range(6):
        p = f.lidar.points[:200, :3].double()
        pg = g.lidar.points[:200, :3].double()
        cam0 = (torch.linalg.inv(f.camera.ego_T_cam[c].double()) @ torch.cat([p, torch.ones(len(p), 1)], 1).T)[:3]
        cam1 = (torch.linalg.inv(g.camera.ego_T_cam[c].double()) @ torch.cat([pg, torch.ones(len(p), 1)], 1).T)[:3]
        np.testing.assert_allclose(cam0.numpy(), cam1.numpy(), atol=1e-3)


def test_seeded_augmentation_reproducible(tiny_world, cache):
    ds = NuScenesDataset(str(tiny_world), V, "synth_train", lidar_sweeps=1, radar_sweeps=1, cache_dir=str(cache),
                         augment=GlobalAugment(), seed=7)
    keys = list(SeededSampler(len(ds), seed=1))
    assert keys == list(SeededSampler(len(ds), seed=1)) and sorted(k[0] for k in keys) == list(range(len(ds)))
    s = SeededSampler(len(ds), seed=1)
    assert list(s) != list(s)  # the next epoch draws new order and seeds
    a, b = ds[keys[0]], ds[keys[0]]
    assert torch.equal(a.lidar.points, b.lidar.points) and torch.equal(a.gt.boxes, b.gt.boxes)
    c = ds[(keys[0][0], keys[0][1] + 1)]
    assert not torch.equal(a.lidar.points, c.lidar.points)


# ------------------------------------------------------------------------------------------------ cache, datamodule

def test_cache_invalidation_and_parallel_build(world_copy, tmp_path):
    c = str(tmp_path / "c")
    a = NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=c)
    b = NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=c)
    assert a.cache_built and not b.cache_built and a.cache_path == b.cache_path
    assert NuScenesDataset(str(world_copy), V, "synth_train", cache_dir=c).cache_path != a.cache_path
    scene = world_copy / V / "scene.json"
    rows = json.loads(scene.read_text())
    rows[0]["description"] = "night, fog"
    scene.write_text(json.dumps(rows))
    os.utime(scene, ns=(scene.stat().st_atime_ns, scene.stat().st_mtime_ns + 10**9))
    d = NuScenesDataset(str(world_copy), V, "synth_all", cache_dir=c)
    assert d.cache_built and d.cache_path != a.cache_path
    assert any(i["conditions"][:2] == ("night", "fog") for i in d.infos)
    moved = tmp_path / "moved"
    shutil.copytree(world_copy, moved)
    assert index_key(moved, V, "synth_all") != index_key(world_copy, V, "synth_all")
    serial = build_index(world_copy, V, "synth_all", workers=1)
    parallel = build_index(world_copy, V, "synth_all", workers=2)
    assert [i["token"] for i in serial] == [i["token"] for i in parallel]
    for s, p in zip(serial, parallel):
        np.testing.assert_array_equal(s["gt_boxes"], p["gt_boxes"])
        assert s["lidar"]["path"] == p["lidar"]["path"] and s["cameras"]["path"] == p["cameras"]["path"]
        np.testing.assert_array_equal(s["cameras"]["key_T_sensor"], p["cameras"]["key_T_sensor"])


def test_datamodule_batches(tiny_world, cache):
    from datasets.datamodule import NuScenesDataModule

    dm = NuScenesDataModule(str(tiny_world), batch_size=3, num_workers=0, lidar_sweeps=2, radar_sweeps=1,
                            image_size=(160, 90), cache_dir=str(cache), seed=5)
    assert dm.hparams.image_size == (160, 90) and dm.hparams.version == V
    dm.setup("fit")
    b1 = next(iter(dm.train_dataloader()))
    b2 = next(iter(NuScenesDataModule(**dm.hparams).train_dataloader()))
    assert len(b1) == 3 and b1.camera.images.shape == (3, 6, 3, 90, 160)
    assert [m.sample_token for m in b1.meta] == [m.sample_token for m in b2.meta]
    assert torch.equal(b1.lidar.points, b2.lidar.points)
    v = next(iter(dm.val_dataloader()))
    assert v.present.shape == (len(v), 3)


# ------------------------------------------------------------------------------------------------ inspect

def test_inspect_exit_codes(pristine, world_copy):
    from datasets.inspect import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--dataroot", str(pristine), "--version", V, "--split", "synth_all"]) == 0
    assert "files OK" in out.getvalue() and "classes:" in out.getvalue()
    files = sorted((world_copy / "samples" / "LIDAR_TOP").glob("*.bin"))
    files[0].write_bytes(files[0].read_bytes()[:-3])
    radar = sorted((world_copy / "samples" / "RADAR_BACK_LEFT").glob("*.pcd"))[0]
    radar.write_bytes(b"garbage\n")
    missing = sorted((world_copy / "samples" / "CAM_FRONT").glob("*.jpg"))[0]
    missing.unlink()
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--dataroot", str(world_copy), "--version", V]) == 1
    text = out.getvalue()
    assert f"BAD {files[0]}" in text and f"BAD {radar}" in text and f"BAD {missing}: missing" in text
    assert "3 of" in text
