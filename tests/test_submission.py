"""A submission for a split without annotations (v1.0-test): eval.py --no-score writes a results JSON that the
devkit's loader accepts, with every sample of the split and the meta of what ran, without scoring anything."""
import json
import math
import shutil

import pytest


@pytest.fixture(scope="module")
def test_world(tiny_world, tmp_path_factory):
    """The tiny world as v1.0-test ships: its tables all there, sample_annotation.json and instance.json empty."""
    root = tmp_path_factory.mktemp("test_world") / "synth-test"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns(".gatefusion_cache"))
    for table in ("sample_annotation", "instance"):
        (root / "v1.0-synth" / f"{table}.json").write_text("[]")
    return root


def split_tokens(root, split: str) -> set[str]:
    from nuscenes import NuScenes

    nusc = NuScenes("v1.0-synth", str(root), verbose=False)
    scenes = set(json.loads((root / "v1.0-synth" / "splits.json").read_text())[split])
    return {s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in scenes}


def test_frames_of_a_split_without_annotations_load_with_no_boxes(test_world, tmp_path):
    from datasets.nuscenes import NuScenesDataset
    from sensors.frame import collate

    ds = NuScenesDataset(str(test_world), "v1.0-synth", "synth_val", cache_dir=str(tmp_path / "cache"))
    batch = collate([ds[i] for i in range(len(ds))])
    assert len(batch) == len(split_tokens(test_world, "synth_val")) and all(len(g.boxes) == 0 for g in batch.gt)


def test_no_score_writes_a_submission_the_devkit_loads(tiny_run, test_world, tmp_path):
    """--no-score on the annotation-free split: results.json loads with the devkit's load_prediction, holds every
    sample token of the split, and its meta says which sensors ran (the camera was off); metrics.json has the cost,
    latency and selection but no NDS, nothing per condition and no traffic-density group (they need ground truth)."""
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    from eval import main

    out = tmp_path / "submission"
    m = main(["--ckpt", str(tiny_run[0]), "--dataroot", str(test_world), "--split", "synth_val", "--out", str(out),
              "--num-workers", "0", "--cache-dir", str(tmp_path / "cache"), "--sensors",
              "camera=off,lidar=fine,radar=on", "--measure-frames", "1", "--no-score"])
    boxes, meta = load_prediction(str(out / "results.json"), max_boxes_per_sample=500, box_cls=DetectionBox)
    assert meta == {"use_camera": False, "use_lidar": True, "use_radar": True, "use_map": False,
                    "use_external": False}
    assert set(boxes.sample_tokens) == split_tokens(test_world, "synth_val")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["scored"] is False and "nds" not in saved and "map" not in saved and saved["per_condition"] == {}
    assert saved["frames"] == m["frames"] == len(boxes.sample_tokens) and saved["measured_frames"] == 1
    assert saved["latency_ms"]["mean"] > 0 and saved["gflops_per_frame"] > 0
    assert 0 < saved["cost_per_frame"]["mean"] < 1 and "day" in saved["selection"]
    assert "empty" not in saved["selection"] and "dense" not in saved["selection"]
    records = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == m["frames"] and all(r["gt_boxes"] == 0 and r["camera"] == "off" for r in records)
    assert sum(not math.isnan(r["latency_ms"]) for r in records) == 1
    assert not (out / "devkit").exists()
