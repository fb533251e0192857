"""visualize.py and report/: the pictures show what the records, results and ground truth say.

The run is written by hand from the tiny world's ground truth (fast, and it controls what each frame ran): two
scenes, the camera off in some frames, a missed box and a false positive in the first frame, a detection under the
score threshold in every frame, and gate probabilities in the first scene (as a gate would record them). A second
world, written to look foreign (4:3 images, other sweep counts, nuScenes-style scene names, no
synthetic_faults.json, a LiDAR file deleted), checks that nothing depends on our generator.
"""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from datasets.evaluation import detections_to_results, write_json, write_results
from report.run import FrameQuality, gate_probabilities, match_frame
from sensors.frame import Detections
from sensors.names import MODES

SCENES = ("synth-0001", "synth-0002")
CAMERA = ("off", "low", "high", "off")
LIDAR = ("fine", "coarse", "off", "fine")
RADAR = ("on", "off", "on", "off")


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    """(dataset of synth_all, {token: frame} of the two scenes)."""
    from datasets.nuscenes import NuScenesDataset

    ds = NuScenesDataset(str(tiny_world), "v1.0-synth", "synth_all", lidar_sweeps=1, radar_sweeps=1,
                         cache_dir=str(tmp_path_factory.mktemp("cache")))
    frames = [ds.load(i) for i in range(len(ds)) if ds.infos[i]["scene_name"] in SCENES]
    return ds, frames


@pytest.fixture(scope="module")
def hand_run(world, tmp_path_factory):
    """An eval.py output folder written by hand; returns (folder, records, detections per token)."""
    ds, frames = world
    run = tmp_path_factory.mktemp("hand_run")
    dets, records = [], []
    for k, f in enumerate(frames):
        i = k % 4
        boxes, labels = f.gt.boxes.clone(), f.gt.labels.clone()
        scores = torch.full((len(boxes),), 0.9)
        if k == 0:  # first box moved 3 m: one missed ground truth and one false positive
            boxes[0, 0] += 3.0
        # one detection under the 0.3 threshold, which is neither drawn nor counted
        boxes, scores = torch.cat([boxes, boxes[:1] + 1.0]), torch.cat([scores, torch.tensor([0.1])])
        labels, attrs = torch.cat([labels, labels[:1]]), torch.cat([f.gt.attributes, f.gt.attributes[:1]])
        dets.append(Detections(boxes, scores, labels, attrs))
        rec = {"sample_token": f.meta.sample_token, "scene": f.meta.scene_name, "camera": CAMERA[i],
               "lidar": LIDAR[i], "radar": RADAR[i], "gflops": 0.5 + 0.1 * i, "latency_ms": 40.0 + i,
               "detections": len(scores), "conditions": list(f.meta.conditions),
               "faults": ["lidar"] if k == 1 else []}
        if f.meta.scene_name == SCENES[0]:
            rec["gate_probs"] = {"camera": {"off": 0.1, "low": 0.2, "high": 0.7}, "lidar": [0.0, 0.3, 0.7],
                                 "radar": [0.4, 0.6]}
        records.append(rec)
    write_results(run / "results.json", detections_to_results(dets, [f.meta for f in frames]), {"lidar": True})
    summary = {"nds": 0.5, "map": 0.4, "frames": 4, "tp_errors": {"trans_err": 0.2, "scale_err": 0.1,
                                                                  "orient_err": 0.3, "vel_err": 1.0,
                                                                  "attr_err": 0.2}}
    write_json(run / "metrics.json", {
        **summary, "frames": len(frames), "per_class_ap": {"car": 0.5, "pedestrian": 0.3},
        "per_condition": {"day": summary, "night": None},
        "per_corruption": {"fog": {"1": summary, "5": {**summary, "nds": 0.2}}},
        "pareto": [{"name": "lidar fine", "gflops": 1.6, "nds": 0.35}, {"name": "all high", "gflops": 2.1,
                                                                          "nds": 0.43}],
        "gflops_per_frame": 0.6, "latency_ms": {"mean": 41.0, "p50": 41.0, "p95": 43.0, "fps": 24.0},
        "sensors": {"camera": "high", "lidar": "fine", "radar": "on"}, "device": "cpu",
        "dataroot": str(ds.root), "version": "v1.0-synth", "split": "synth_all"})
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run, records, {f.meta.sample_token: d for f, d in zip(frames, dets)}


@pytest.fixture(scope="module")
def drawn(hand_run, tmp_path_factory):
    import visualize

    run, _, _ = hand_run
    out = tmp_path_factory.mktemp("report")
    return visualize.main(["--run", str(run), "--out", str(out), "--scenes", "1", "--lidar-sweeps", "1",
                           "--radar-sweeps", "1", "--image-width", "160",
                           "--cache-dir", str(tmp_path_factory.mktemp("cache2"))])


def test_match_frame_follows_the_devkit_rule():
    gt = np.zeros((3, 9))
    gt[:, 0], gt[:, 3:6] = [10.0, 20.0, 70.0], [4, 2, 1.5]  # the third beyond the car range (50 m)
    pred = {"boxes": gt[[0, 0, 1]] + [[1.5, 0, 0, 0, 0, 0, 0, 0, 0], [0.5] + [0] * 8, [2.5] + [0] * 8],
            "labels": np.zeros(3, dtype=int), "scores": np.array([0.9, 0.8, 0.7])}
    q = match_frame(pred, gt, np.zeros(3, dtype=int), gt_num_pts=[5, 5, 5])
    # the higher-scored detection takes the box even though the second one is nearer; 2.5 m is too far
    assert q.gt_status.tolist() == [1, 0, -1] and q.pred_status.tolist() == [1, 0, 0]
    assert (q.gt, q.matched, q.false_positives, q.recall) == (2, 1, 2, 0.5)
    assert match_frame(pred, gt, np.zeros(3, dtype=int), gt_num_pts=[0, 5, 5]).gt_status.tolist() == [-1, 0, -1]
    assert np.isnan(FrameQuality(np.zeros(0), np.zeros(0)).recall)


def test_gate_probabilities_read_both_layouts():
    rec = {"gate_probs": {"camera": {"high": 0.5, "low": 0.5}, "radar": [0.25, 0.75]}}
    p = gate_probabilities(rec, MODES)
    assert p["camera"].tolist() == [0.0, 0.5, 0.5] and p["radar"].tolist() == [0.25, 0.75] and "lidar" not in p
    assert gate_probabilities({}, MODES) == {}


def test_timeline_rows_equal_the_records(drawn, hand_run):
    _, records, _ = hand_run
    assert [t.scene for t in drawn["timelines"]] == list(SCENES)
    for t in drawn["timelines"]:
        recs = [r for r in records if r["scene"] == t.scene]
        assert t.tokens == [r["sample_token"] for r in recs]
        for s in ("camera", "lidar", "radar"):
            assert t.modes[s].tolist() == [r[s] for r in recs]
        assert t.gflops.tolist() == [r["gflops"] for r in recs]
        assert t.latency_ms.tolist() == [r["latency_ms"] for r in recs]
        assert t.faults["lidar"].tolist() == ["lidar" in r["faults"] for r in recs]
        assert t.conditions == [tuple(r["conditions"]) for r in recs]
        assert t.path.is_file() and t.image.shape[2] == 3
    first, second = drawn["timelines"]
    # the first frame: one box moved 3 m, so one ground truth missed and one false positive; the rest all matched
    assert first.false_positives.tolist() == [1, 0, 0, 0]
    assert first.recall[0] == (first.gt[0] - 1) / first.gt[0] and np.all(first.recall[1:][first.gt[1:] > 0] == 1)
    assert first.gate_probs["camera"].tolist() == [[0.1, 0.2, 0.7]] * 4
    assert first.gate_probs["radar"].tolist() == [[0.4, 0.6]] * 4
    assert second.gate_probs == {}


def _by_position(boxes):
    return boxes[np.lexsort((np.round(boxes[:, 1], 2), np.round(boxes[:, 0], 2)))]


def test_panels_dim_the_cameras_that_were_off_and_draw_the_frames_boxes(drawn, hand_run, world):
    _, records, dets = hand_run
    _, frames = world
    by_token = {f.meta.sample_token: f for f in frames}
    assert len(drawn["panels"]) == 4  # --scenes 1
    for p, r in zip(drawn["panels"], records):
        assert p.sample_token == r["sample_token"] and p.path.is_file()
        assert p.cameras_dimmed == (r["camera"] == "off",) * 6
        assert (p.lidar_greyed, p.radar_greyed) == (r["lidar"] == "off", r["radar"] == "off")
        f, d = by_token[p.sample_token], dets[p.sample_token]
        np.testing.assert_allclose(p.boxes["gt"], f.gt.boxes.numpy(), atol=1e-6)
        keep = (d.scores >= 0.3).numpy()
        got, want = _by_position(p.boxes["pred"]), _by_position(d.boxes.numpy()[keep])
        np.testing.assert_allclose(got[:, :6], want[:, :6], atol=1e-3)
        np.testing.assert_allclose(np.cos(got[:, 6] - want[:, 6]), 1.0, atol=1e-6)  # yaw equal modulo 2 pi
        assert len(p.status["pred"]) == keep.sum() and len(p.status["gt"]) == len(f.gt.boxes)
        # a ground-truth box straight ahead is drawn into CAM_FRONT; every box that reaches into a camera is drawn
        ahead = (f.gt.boxes[:, 0] > 8) & (f.gt.boxes[:, 1].abs() < 0.2 * f.gt.boxes[:, 0])
        assert p.in_cameras["gt"][0] >= int(ahead.sum())
        assert sum(p.in_cameras["gt"]) >= int((f.gt.boxes[:, :2].norm(dim=1) > 8).sum())
    assert drawn["panels"][0].gate_probs["lidar"].tolist() == [0.0, 0.3, 0.7]
    # the pixels agree: the camera images of the frame with the camera off are much darker than those of the next
    from PIL import Image
    off, on = (np.asarray(Image.open(p.path).convert("L"), dtype=float) for p in drawn["panels"][:2])
    h, w = off.shape
    cams = (slice(int(0.12 * h), int(0.75 * h)), slice(0, int(0.6 * w)))
    assert off[cams].mean() < 0.6 * on[cams].mean()
    assert [a.name for a in drawn["animations"]] == [f"{SCENES[0]}.gif"]
    with Image.open(drawn["animations"][0]) as im:
        assert im.n_frames == 4


def test_html_report_is_self_contained(drawn):
    text = drawn["report"].read_text()
    assert "<title>gatefusion evaluation report: " in text
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I), "external reference"
    assert "<script" not in text.lower() and "url(" not in text
    srcs = re.findall(r"""src="([^"]*)\"""", text)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    # 2 timelines, 1 sample panel, 1 animation, 1 3D view, 1 pareto plot
    assert len(srcs) == 6 and text.count("data:image/gif") == 1
    for expected in ("Per condition", "Per corruption", "fog / 5", "Accuracy against cost", *SCENES,
                     "camera rig</span></td><td><span class=\"t\">off 50%</span></td><td><span class=\"t\">low 25%"):
        assert expected in text
    assert drawn["report"].stat().st_size < 5e6


def test_3d_view_is_rendered_off_screen(drawn, hand_run):
    _, records, dets = hand_run
    v = drawn["view3d"]
    first = records[0]["sample_token"]
    assert v.path.name == f"view3d_{first}.png" and v.path.is_file()
    assert v.boxes["pred"] == int((dets[first].scores >= 0.3).sum()) and v.lidar_points > 0
    img = v.image.astype(float)
    colours = np.unique(v.image.astype(np.int64) @ [65536, 256, 1])
    assert img.std() > 5 and len(colours) > 50  # not a blank frame


def test_visualize_rejects_what_it_cannot_draw(tmp_path, hand_run, world, monkeypatch):
    import visualize
    from report.run import ego_detections
    from report.view3d import render_3d

    with pytest.raises(ValueError, match="not an eval.py output folder: no metrics.json"):
        visualize.main(["--run", str(tmp_path)])
    with pytest.raises(ValueError, match="--frame nope: not a recorded frame"):
        visualize.main(["--run", str(hand_run[0]), "--out", str(tmp_path), "--frame", "nope"])
    with pytest.raises(ValueError, match="--scene nope: not in the records"):
        visualize.main(["--run", str(hand_run[0]), "--out", str(tmp_path), "--scene", "nope"])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    f = world[1][0]
    pred = ego_detections([], f.meta.global_T_ego)
    with pytest.raises(ValueError, match="needs a display"):
        render_3d(f, {}, pred, match_frame(pred, f.gt.boxes.numpy(), f.gt.labels.numpy()), "x", interactive=True)


def test_a_world_we_did_not_write_with_a_sensor_missing_in_one_frame(tmp_path):
    """4:3 images, one LiDAR sweep between key frames, a nuScenes-style scene name, no synthetic_faults.json and
    one frame's LiDAR file gone: the panels keep the images' aspect ratio and draw that frame without LiDAR."""
    from dataclasses import replace

    import visualize
    from datasets.nuscenes import NuScenesDataset
    from datasets.synthetic import PRESETS, generate

    root = tmp_path / "world"
    generate(root, replace(PRESETS["tiny"], scenes=1, samples_per_scene=2, image_size=(160, 120), lidar_sweeps=1))
    meta = root / "v1.0-synth"
    (meta / "synthetic_faults.json").unlink()
    for name in ("scene.json", "splits.json"):
        (meta / name).write_text((meta / name).read_text().replace("synth-0000", "scene-0061"))
    ds = NuScenesDataset(str(root), "v1.0-synth", "synth_all", cache_dir=str(tmp_path / "cache"))
    (root / ds.infos[1]["lidar"]["path"][0]).unlink()
    run = tmp_path / "run"
    run.mkdir()
    records = [{"sample_token": i["token"], "scene": i["scene_name"], "camera": "low", "lidar": "fine",
                "radar": "on", "gflops": 1.0, "latency_ms": 50.0, "detections": 0, "conditions": [],
                "faults": ["lidar"] if k == 1 else []} for k, i in enumerate(ds.infos)]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run / "results.json").write_text(json.dumps({"meta": {}, "results": {r["sample_token"]: [] for r in records}}))
    write_json(run / "metrics.json", {"dataroot": str(root), "version": "v1.0-synth", "split": "synth_all"})
    with pytest.warns(UserWarning, match="missing"):
        out = visualize.main(["--run", str(run), "--out", str(tmp_path / "out"), "--no-3d", "--image-width", "120",
                              "--cache-dir", str(tmp_path / "cache")])
    assert [t.scene for t in out["timelines"]] == ["scene-0061"] and out["view3d"] is None
    assert out["timelines"][0].faults["lidar"].tolist() == [False, True]
    panels = out["panels"]
    assert [p.lidar_points == 0 for p in panels] == [False, True]
    assert all(p.cameras_missing == (False,) * 6 and p.scene == "scene-0061" for p in panels)
    from PIL import Image
    assert Image.open(panels[0].path).size == Image.open(panels[1].path).size
    assert "scene-0061" in out["report"].read_text()


@pytest.mark.slow
def test_report_opens_in_headless_chromium(drawn, tmp_path):
    """The report renders in a real browser without a server or network: the DOM has its title and images, and a
    screenshot differs from one of a blank page. Fails when chromium is missing (`make test-slow` installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (apt-get install -y chromium)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--window-size=1280,1600"]
    url = drawn["report"].resolve().as_uri()
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "<title>gatefusion evaluation report" in dom and dom.count("<img") == 6
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><head><title>blank</title></head><body></body></html>")
    from PIL import Image

    shots = {}
    for name, u in (("report", url), ("blank", blank.as_uri())):
        subprocess.run([chromium, *flags, f"--screenshot={tmp_path / name}.png", u], capture_output=True,
                       timeout=120, check=True)
        shots[name] = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB")).astype(float)
    assert shots["report"].shape == shots["blank"].shape
    assert np.abs(shots["report"] - shots["blank"]).mean() > 3 and shots["report"].std() > 20
