"""bench/: static_configs.py over several checkpoints (mean, spread, per-run choices, reuse of metrics.json), and
the probes (motion_probe.py, camera_probe.py, heading_cue.py)."""
import argparse
import json

import pytest

from bench.static_configs import mean_rows, report, reusable, seed_config
from eval import file_sha256


def _metrics(nds: float, gflops: float, day: float, night: float) -> dict:
    return {"nds": nds, "map": nds / 2, "gflops_per_frame": gflops, "latency_ms": {"mean": 10 * gflops},
            "per_condition": {"day": {"nds": day}, "night": {"nds": night}}}


def test_mean_of_several_checkpoints_and_each_ones_choice():
    """Two runs that disagree on whether the camera is worth it by day: the mean decides, the spread and each run's
    own pick are printed beside it."""
    a = {"lidar+radar": _metrics(0.40, 1.66, 0.40, 0.40), "all high": _metrics(0.44, 2.10, 0.46, 0.41)}
    b = {"lidar+radar": _metrics(0.42, 1.66, 0.43, 0.41), "all high": _metrics(0.43, 2.10, 0.44, 0.42),
         "radar": _metrics(0.2, 1.49, 0.2, 0.2)}
    rows = mean_rows([a, b])
    assert sorted(rows) == ["all high", "lidar+radar"]  # only configurations every run has
    assert abs(rows["all high"]["nds"] - 0.435) < 1e-9 and abs(rows["all high"]["per_condition"]["day"]["nds"]
                                                               - 0.45) < 1e-9
    assert abs(rows["lidar+radar"]["latency_ms"]["mean"] - 16.6) < 1e-9
    text = report({"seed0": a, "seed1": b})
    assert "mean of 2 checkpoints (seed0, seed1)" in text
    spread = text.split("Spread")[1].split("\n\n")[0]
    assert "| all high           | 0.010 | 0.005 | 0.020 |   -   | 0.010 |" in spread  # no dusk frames
    per_run = text.split("per checkpoint")[1].split("\n\n")[0]
    # by day run a needs the camera (0.40 < 0.95 * 0.46), run b does not; the mean (0.415 vs 0.45) needs it
    assert "| day       | all high           | lidar+radar        |" in per_run
    assert "| day       | all high           | 0.450 | all high           | 0.450 |" in text
    assert "| night     | all high           | 0.415 | lidar+radar        | 0.405 |" in text


def test_reuse_only_metrics_written_for_the_same_checkpoint_file_and_data(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights")
    args = argparse.Namespace(dataroot="data/x", version="v1.0-synth", split="synth_val", limit=None)
    saved = {**_metrics(0.4, 1.6, 0.4, 0.4), "checkpoint_sha256": file_sha256(ckpt), "dataroot": "data/x",
             "version": "v1.0-synth", "split": "synth_val", "limit": None,
             "sensors": {"camera": "off", "lidar": "fine", "radar": "on"}}
    path = tmp_path / "metrics.json"
    assert reusable(path, str(ckpt), "camera=off,lidar=fine,radar=on", args) is None  # nothing written yet
    path.write_text(json.dumps(saved))
    assert reusable(path, str(ckpt), "camera=off,lidar=fine,radar=on", args)["nds"] == 0.4
    assert reusable(path, str(ckpt), "camera=high,lidar=fine,radar=on", args) is None
    assert reusable(path, str(ckpt), "camera=off,lidar=fine,radar=on",
                    argparse.Namespace(**{**vars(args), "limit": 8})) is None
    corrupted = tmp_path / "corrupted.json"  # a corrupted run is never taken for a clean one, nor the reverse
    corrupted.write_text(json.dumps({**saved, "corruption": "lidar_fog", "severity": 3}))
    assert reusable(corrupted, str(ckpt), "camera=off,lidar=fine,radar=on", args) is None
    assert reusable(corrupted, str(ckpt), "camera=off,lidar=fine,radar=on", args, corruption="lidar_fog",
                    severity=3)["nds"] == 0.4
    assert reusable(corrupted, str(ckpt), "camera=off,lidar=fine,radar=on", args, corruption="lidar_fog",
                    severity=5) is None
    gated = tmp_path / "gated.json"  # the gate's run at one budget is not another budget's, nor a static one's
    gated.write_text(json.dumps({**saved, "sensors": "gate", "budget": 0.5, "gate_offsets": {"full": 0.0}}))
    assert reusable(gated, str(ckpt), None, args, budget=0.5)["nds"] == 0.4
    assert reusable(gated, str(ckpt), None, args, budget=0.8) is None
    assert reusable(gated, str(ckpt), "camera=off,lidar=fine,radar=on", args) is None
    gated.write_text(json.dumps({**saved, "sensors": "gate", "budget": 0.5}))  # from before eval.py's gate offsets
    assert reusable(gated, str(ckpt), None, args, budget=0.5) is None
    ckpt.write_bytes(b"other weights")  # retrained into the same path
    assert reusable(path, str(ckpt), "camera=off,lidar=fine,radar=on", args) is None


def test_seed_runs_write_everything_in_their_own_folder():
    root, cfg = seed_config(2)
    assert root == "runs/demo-seed2" and cfg["seed_everything"] == 2
    assert cfg["trainer"]["default_root_dir"] == "runs/demo-seed2" and "runs/demo" not in str(cfg).replace(
        "runs/demo-seed2", "")
    assert seed_config(0)[0] == "runs/demo" and seed_config(0)[1]["seed_everything"] == 0


def test_motion_probe_runs_at_a_branch_on_the_checkpoints_own_data_settings(tiny_run, tiny_world, capsys):
    from bench import motion_probe

    ckpt, cache = tiny_run
    motion_probe.main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--sensors", "lidar=fine,radar=on",
                       "--at", "lidar", "--steps", "2", "--every", "2"])
    out = capsys.readouterr().out
    assert out.startswith("step 2: cars") and "axis error probe" in out and "zero" in out


def test_camera_probe_scores_the_image_cnn_on_the_checkpoints_val_split(tiny_run, tiny_world, capsys):
    import torch

    from bench import camera_probe
    from sensors.camera import DEPTH_RANGE

    ckpt, _ = tiny_run
    tally = camera_probe.main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--every", "1"])
    out = capsys.readouterr().out
    assert "| all | object | 1-20 m |" in out and "right class" in out
    t = tally["all"]
    assert t["object cells"] > 0 and 0 <= t["class right"] <= t["object seen"] <= t["object cells"]
    assert t["background cells"] > 0 and t["background right"] <= t["background cells"]
    assert all(t[f"{k} bin"] <= t[f"{k} n"] for k in ("object 1-20 m", "background 1-20 m"))
    # the LiDAR depth of a cell is its nearest point's: two points on one ray, 10 m and 30 m along the optical axis
    cam = torch.eye(4)
    cam[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # optical axis = ego x
    K = torch.tensor([[100.0, 0.0, 50.0], [0.0, 100.0, 25.0], [0.0, 0.0, 1.0]])
    data = type("CameraData", (), {"images": torch.zeros(1, 1, 3, 50, 100), "ego_T_cam": cam[None, None],
                                   "intrinsics": K[None, None], "valid": torch.ones(1, 1)})()
    points = torch.tensor([[10.0, 0.0, 0.0], [30.0, 0.0, 0.0], [DEPTH_RANGE[1] + 5.0, 2.0, 0.0]])
    depth = camera_probe.lidar_depth(data, points, torch.zeros(3, dtype=torch.long), (5, 10))
    assert float(depth[0, 0, 2, 5]) == 10.0 and torch.isfinite(depth).sum() == 1


def test_heading_cue_finds_the_lower_end_of_a_box_in_its_own_frame():
    import math

    import torch

    from bench.heading_cue import end_heights

    # a car 4 m long, 1.5 m high, yaw 90 degrees (front towards +y), bonnet 0.8 m high over its front metre
    box = torch.tensor([10.0, 5.0, 0.75, 4.0, 1.8, 1.5, math.pi / 2])
    along = torch.linspace(-2.0, 2.0, 41)
    top = torch.where(along > 1.0, 0.8, 1.5)
    side = torch.stack([torch.full_like(along, 10.9), 5.0 + along, top], 1)  # its right side, top edge
    front, back = end_heights(side, box)
    assert front == pytest.approx(0.8) and back == pytest.approx(1.5)
    assert end_heights(side[along < 0], box) == (None, pytest.approx(1.5))  # no point at the front end
    turned = box.clone()
    turned[6] = -math.pi / 2  # the same points, the box facing the other way: the ends swap
    assert end_heights(side, turned) == (pytest.approx(1.5), pytest.approx(0.8))


def test_axis_profile_reads_the_box_along_the_heads_axis_convention():
    """The profile is read along the axis representative with cos >= 0 (the head's direction target), so a box
    and the same box turned around give the same features: which end is the front is the label, not the input."""
    import math

    import torch

    from bench.heading_cue import PROFILE_BINS, axis_profile

    box = torch.tensor([10.0, 5.0, 0.75, 4.0, 1.8, 1.5, 0.2])  # front towards +x (cos > 0)
    along = torch.linspace(-1.9, 1.9, 39)
    top = torch.where(along > 1.0, 0.8, 1.5)
    c, s = math.cos(0.2), math.sin(0.2)
    side = torch.stack([10.0 + c * along - s * 0.9, 5.0 + s * along + c * 0.9, top], 1)
    f = axis_profile(side, box)
    heights, seen = f[:PROFILE_BINS], f[PROFILE_BINS:]
    assert seen.all() and heights[-1] == pytest.approx(0.8 / 1.5, abs=0.02) and heights[0] == pytest.approx(1.0)
    turned = box.clone()
    turned[6] += math.pi
    assert axis_profile(side, turned) == pytest.approx(f)
    assert not axis_profile(side + torch.tensor([20.0, 0.0, 0.0]), box)[PROFILE_BINS:].any()  # points elsewhere
