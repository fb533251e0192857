"""Evaluation adapter: project boxes -> official results JSON -> the devkit's DetectionEval, and eval.py's errors."""
import json

import pytest
import torch

from datasets.evaluation import condition_subsets, detections_to_results, official_eval, write_results
from sensors.frame import Detections


@pytest.fixture(scope="module")
def val_frames(tiny_world, tmp_path_factory):
    from datasets.nuscenes import NuScenesDataset

    ds = NuScenesDataset(str(tiny_world), "v1.0-synth", "synth_val", lidar_sweeps=1, radar_sweeps=1,
                         cache_dir=str(tmp_path_factory.mktemp("cache")))
    return [ds[i] for i in range(len(ds))]


def _gt_as_detections(frames):
    return [Detections(f.gt.boxes, torch.ones(len(f.gt.boxes)), f.gt.labels, f.gt.attributes) for f in frames]


def test_ground_truth_through_our_conversions_scores_full_marks(tiny_world, val_frames, tmp_path):
    """GT boxes in the project layout, written back to global devkit boxes, must give NDS ~ 1: proves every
    conversion (ego <-> global, wlh <-> lwh, yaw <-> quaternion, velocity frames, attributes) is right."""
    from nuscenes import NuScenes

    metas = [f.meta for f in val_frames]
    path = write_results(tmp_path / "results.json", detections_to_results(_gt_as_detections(val_frames), metas),
                         {"lidar": True})
    nusc = NuScenes("v1.0-synth", str(tiny_world), verbose=False)
    out = official_eval(nusc, path, "synth_val", tmp_path / "eval", condition_subsets(metas))
    assert out["overall"]["nds"] >= 0.99 and out["overall"]["map"] >= 0.99
    assert out["overall"]["frames"] == len(val_frames)
    for name, s in out["subsets"].items():
        assert s is not None and s["frames"] > 0, name


def test_noisy_boxes_score_lower_and_limited_runs_evaluate_only_their_frames(tiny_world, val_frames, tmp_path):
    from nuscenes import NuScenes

    g = torch.Generator().manual_seed(0)
    dets = _gt_as_detections(val_frames)
    for d in dets:
        d.boxes = d.boxes.clone()
        d.boxes[:, :2] += torch.randn(len(d.boxes), 2, generator=g) * 0.7
    half = max(1, len(dets) // 2)
    path = write_results(tmp_path / "r.json", detections_to_results(dets[:half], [f.meta for f in val_frames[:half]]),
                         {"lidar": True})
    nusc = NuScenes("v1.0-synth", str(tiny_world), verbose=False)
    out = official_eval(nusc, path, "synth_val", tmp_path / "eval")
    assert out["overall"]["frames"] == half
    assert 0.2 < out["overall"]["nds"] < 0.97
    assert out["overall"]["tp_errors"]["trans_err"] > 0.3


def test_results_without_any_detection_score_zero_instead_of_crashing(tiny_world, val_frames, tmp_path):
    """A model that detects nothing (an untrained one, every score under the threshold) gets the devkit's metrics
    of an empty result; the devkit itself asserts on a result without a single box."""
    from nuscenes import NuScenes

    metas = [f.meta for f in val_frames]
    empty = [Detections(torch.zeros(0, 9), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                        torch.zeros(0, dtype=torch.long)) for _ in val_frames]
    path = write_results(tmp_path / "r.json", detections_to_results(empty, metas), {"lidar": True})
    nusc = NuScenes("v1.0-synth", str(tiny_world), verbose=False)
    with pytest.warns(UserWarning, match="no detection in any frame"):
        out = official_eval(nusc, path, "synth_val", tmp_path / "eval", condition_subsets(metas))
    assert out["overall"]["nds"] == 0.0 and out["overall"]["map"] == 0.0
    assert out["overall"]["frames"] == len(val_frames)
    assert all(s is None or s["nds"] == 0.0 for s in out["subsets"].values())


def test_results_follow_the_official_format(val_frames):
    frame = val_frames[0]
    res = detections_to_results(_gt_as_detections([frame]), [frame.meta])
    rows = res[frame.meta.sample_token]
    assert len(rows) == len(frame.gt.boxes)
    for r in rows:
        assert set(r) == {"sample_token", "translation", "size", "rotation", "velocity", "detection_name",
                          "detection_score", "attribute_name"}
        assert len(r["translation"]) == 3 and len(r["size"]) == 3 and len(r["rotation"]) == 4
        assert len(r["velocity"]) == 2 and isinstance(r["detection_score"], float)
    json.dumps(res)


def test_eval_rejects_missing_and_corrupt_checkpoints(tmp_path):
    from eval import load_checkpoint

    with pytest.raises(ValueError, match="no such file"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ValueError, match="bad.ckpt"):
        load_checkpoint(bad)
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_checkpoint(other)


def test_eval_py_end_to_end_on_a_tiny_checkpoint(tiny_world, tmp_path):
    """One training step on the tiny config, then eval.py on two val frames: results JSON, metrics.json with
    NDS/mAP/per-class AP, counted GFLOPs, latency, and per-frame records of what ran."""
    import yaml

    import train
    from eval import main as eval_main

    cfg = yaml.safe_load(open("configs/tiny.yaml").read().replace("runs/tiny", str(tmp_path / "run")))
    cfg["data"].update(dataroot=str(tiny_world), cache_dir=str(tmp_path / "cache"))
    cfg["trainer"]["max_steps"] = 1
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    train.main(["fit", "--config", str(tmp_path / "tiny.yaml")])
    out = tmp_path / "eval"
    m = eval_main(["--ckpt", str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "--dataroot", str(tiny_world),
                   "--split", "synth_val", "--out", str(out), "--limit", "2", "--num-workers", "0",
                   "--sensors", "camera=low,lidar=coarse,radar=off", "--cache-dir", str(tmp_path / "cache"),
                   "--flop-frames", "1"])
    assert m["frames"] == 2 and 0.0 <= m["nds"] <= 1.0 and len(m["per_class_ap"]) == 10
    assert m["sensors"] == {"camera": "low", "lidar": "coarse", "radar": "off"}
    assert m["gflops_per_frame"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["p50"] > 0
    assert abs(m["gflops_per_frame"] - m["gflops_per_frame_records"]) < 0.05 * m["gflops_per_frame"] + 1e-3
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["nds"] == m["nds"]
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["use_radar"] is False and len(results["results"]) == 2
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert [r["radar"] for r in records] == ["off", "off"] and all(r["gflops"] > 0 for r in records)
