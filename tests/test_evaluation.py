"""Evaluation adapter: project boxes -> official results JSON -> the devkit's DetectionEval, and eval.py's errors."""
import json
import math
import re
from pathlib import Path

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
    from fusion.checkpoint import load_checkpoint

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


def _edited_checkpoint(ckpt_path, out, edit):
    """A copy of the checkpoint at ckpt_path, changed in place by edit(dict), saved to out."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out)
    return out


def test_eval_tells_foreign_and_other_version_checkpoints(tiny_run, tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel

    from fusion.checkpoint import load_checkpoint

    ckpt, _ = tiny_run
    model, data_hp = load_checkpoint(ckpt)
    assert type(model).__name__ == "GateFusionModule" and data_hp["image_size"] == [160, 90]

    def boring(c):
        c["state_dict"], c["hyper_parameters"] = BoringModel().state_dict(), {}
    with pytest.raises(ValueError, match=r"boring.ckpt: not a gatefusion checkpoint .* has layer\.bias, layer\.weight"):
        load_checkpoint(_edited_checkpoint(ckpt, tmp_path / "boring.ckpt", boring))
    with pytest.raises(ValueError, match=r"another version: unknown hyperparameters gate_temperature$"):
        load_checkpoint(_edited_checkpoint(ckpt, tmp_path / "hp.ckpt",
                                           lambda c: c["hyper_parameters"].update(gate_temperature=0.5)))

    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    key = next(k for k in sd if k.endswith(".weight"))

    def renamed(c):
        c["state_dict"]["detector.renamed.weight"] = c["state_dict"].pop(key)
    with pytest.raises(ValueError, match=rf"another version: missing/unexpected weights: missing {re.escape(key)}; "
                                         r"unexpected detector\.renamed\.weight$"):
        load_checkpoint(_edited_checkpoint(ckpt, tmp_path / "renamed.ckpt", renamed))


@pytest.mark.parametrize("error", [ZeroDivisionError("division by zero"), KeyError("camera"),
                                   TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'"),
                                   RuntimeError("mat1 and mat2 shapes cannot be multiplied")])
def test_eval_lets_bugs_while_loading_a_checkpoint_through(tiny_run, monkeypatch, error):
    """A bug in the module while it is rebuilt from a good checkpoint is not reported as a bad file."""
    from fusion.checkpoint import load_checkpoint
    from fusion.module import GateFusionModule

    def broken(self, checkpoint):
        raise error
    monkeypatch.setattr(GateFusionModule, "on_load_checkpoint", broken)
    with pytest.raises(type(error)) as e:
        load_checkpoint(tiny_run[0])
    assert e.value is error


def test_eval_py_stops_before_running_the_model_without_sensor_files(tiny_run, tiny_world, tmp_path, monkeypatch):
    """eval.py on a dataroot whose tables are fine but whose sensor files are gone exits with the dataset's error
    ("eval.py: error: ...") before the model runs on any frame."""
    import runpy
    import shutil
    import sys

    import datasets.evaluation

    root = tmp_path / "world"
    shutil.copytree(tiny_world, root, ignore=shutil.ignore_patterns(".gatefusion_cache"))
    for sd in json.loads((root / "v1.0-synth" / "sample_data.json").read_text()):
        (root / sd["filename"]).unlink(missing_ok=True)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the model ran")
    monkeypatch.setattr(datasets.evaluation, "run_model", must_not_run)
    monkeypatch.setattr(sys, "argv", ["eval.py", "--ckpt", str(tiny_run[0]), "--dataroot", str(root), "--split",
                                      "synth_val", "--out", str(tmp_path / "eval"), "--num-workers", "0",
                                      "--cache-dir", str(tmp_path / "cache")])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "eval.py"), run_name="__main__")
    msg = str(e.value.code)
    assert msg.startswith(f"eval.py: error: dataroot {root.resolve()}, version v1.0-synth, split 'synth_val': ")
    assert "key frames have no sensor file at all" in msg and not (tmp_path / "eval").exists()


def _check_nds_is_the_devkits(out, dataroot, split="synth_val"):
    """metrics.json's NDS and mAP are what the devkit's DetectionEval computes on the results.json beside it."""
    from nuscenes import NuScenes
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    nusc = NuScenes("v1.0-synth", str(dataroot), verbose=False)
    ev = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(out / "results.json"), eval_set=split,
                       output_dir=str(out / "recomputed"), verbose=False)
    metrics, _ = ev.evaluate()
    m = json.loads((out / "metrics.json").read_text())
    assert m["nds"] == pytest.approx(metrics.nd_score, abs=1e-9) and m["map"] == pytest.approx(metrics.mean_ap), (
        f"metrics.json NDS {m['nds']} mAP {m['map']}, the devkit's on results.json {metrics.nd_score} "
        f"{metrics.mean_ap}")
    return m


@pytest.fixture(scope="module")
def eval_run(tiny_world, tiny_run, tmp_path_factory):
    """(output folder, returned metrics) of eval.py on the val split with a one-step checkpoint whose detections are
    replaced by the ground truth shifted 0.4 m more in x in each next frame, so that NDS is neither 0 nor 1 (the
    untrained model itself detects nothing); the model still runs, is timed and counted."""
    import datasets.evaluation
    from eval import main as eval_main

    real = datasets.evaluation.run_model

    def jittered(model, loader, *args, **kwargs):
        detections, records, metas, measured = real(model, loader, *args, **kwargs)
        frames = [loader.dataset[i] for i in range(len(loader.dataset))]
        assert [f.meta.sample_token for f in frames] == [m.sample_token for m in metas]
        detections = _gt_as_detections(frames)
        for k, d in enumerate(detections):
            d.boxes = d.boxes.clone()
            d.boxes[:, 0] += 0.4 * k
        return detections, records, metas, measured

    out = tmp_path_factory.mktemp("eval_run") / "eval"
    ckpt, cache = tiny_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(datasets.evaluation, "run_model", jittered)
        m = eval_main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--split", "synth_val", "--out", str(out),
                       "--num-workers", "0", "--sensors", "camera=low,lidar=coarse,radar=off",
                       "--cache-dir", str(cache)])
    return out, m


def test_eval_py_end_to_end_on_a_tiny_checkpoint(eval_run, tiny_world):
    """eval.py on the val split: results JSON, metrics.json whose NDS/mAP are the devkit's on that results JSON,
    per-class AP, counted GFLOPs, latency, and per-frame records of what ran."""
    out, m = eval_run
    frames = json.loads((out / "results.json").read_text())["results"]
    assert m["frames"] == len(frames) >= 3 and len(m["per_class_ap"]) == 10
    assert _check_nds_is_the_devkits(out, tiny_world)["nds"] == m["nds"] and 0.3 < m["nds"] < 0.99
    assert m["sensors"] == {"camera": "low", "lidar": "coarse", "radar": "off"}
    assert m["gflops_per_frame"] > 0 and m["latency_ms"]["p95"] >= m["latency_ms"]["p50"] > 0
    assert 0 < m["cost_per_frame"]["mean"] <= m["cost_per_frame"]["p95"] < 1
    assert m["selection"]["all"]["selection"]["lidar"] == {"off": 0.0, "coarse": 1.0, "fine": 0.0}
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["use_radar"] is False
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == m["frames"] and all(r["radar"] == "off" and r["gflops"] > 0 for r in records)
    assert sum(r["gflops"] for r in records) / len(records) == pytest.approx(m["gflops_per_frame"])


def test_nds_check_fails_when_metrics_and_results_disagree(eval_run, tiny_world, tmp_path):
    """The devkit check of the end-to-end test, fed results that are not the ones metrics.json was computed on
    (every box 2 m off in y): it must fail."""
    import shutil

    out = tmp_path / "eval"
    shutil.copytree(eval_run[0], out)
    data = json.loads((out / "results.json").read_text())
    for rows in data["results"].values():
        for r in rows:
            r["translation"][1] += 2.0
    (out / "results.json").write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="metrics.json NDS .* the devkit's on results.json"):
        _check_nds_is_the_devkits(out, tiny_world)


def test_motion_errors_compare_with_zero_velocity_on_the_same_matches():
    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    from datasets.evaluation import motion_errors

    def box(x, v, yaw, name="car", score=-1.0):
        q = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        return DetectionBox(sample_token="s", translation=(x, 0.0, 0.0), size=(2.0, 4.0, 1.5), rotation=q,
                            velocity=v, detection_name=name, detection_score=score)

    gt, pred = EvalBoxes(), EvalBoxes()
    gt.add_boxes("s", [box(0.0, (5.0, 0.0), 0.0), box(10.0, (0.0, 0.0), 0.0), box(20.0, (0.0, 0.0), 0.0, "barrier")])
    pred.add_boxes("s", [box(0.5, (4.0, 0.0), math.pi, score=0.9),  # moving car: 1 m/s off, pointing backwards
                         box(10.0, (0.0, 2.0), 0.1, score=0.8),  # parked car: 2 m/s off, heading 0.1 rad off
                         box(30.0, (0.0, 0.0), 0.0, score=0.9),  # no car within 2 m: unmatched
                         box(20.0, (0.0, 0.0), 1.0, "barrier", score=0.9),  # heading modulo pi: not counted
                         box(0.0, (0.0, 0.0), 0.0, score=0.1)])  # below the score threshold
    m = motion_errors(gt, pred, ["s"])
    assert m["matches"] == 3 and m["moving_matches"] == 1
    assert m["vel_err"] == pytest.approx((1.0 + 2.0 + 0.0) / 3) and m["vel_err_zero"] == pytest.approx(5.0 / 3)
    assert m["moving_vel_err"] == pytest.approx(1.0) and m["moving_vel_err_zero"] == pytest.approx(5.0)
    assert m["heading_err"] == pytest.approx((math.pi + 0.1) / 2) and m["heading_backwards"] == pytest.approx(0.5)
    assert m["moving_heading_matches"] == 1 and m["moving_heading_backwards"] == pytest.approx(1.0)
    assert m["moving_heading_err"] == pytest.approx(math.pi)
    assert m["still_heading_matches"] == 1 and m["still_heading_backwards"] == pytest.approx(0.0)


def test_eval_py_help_shows_every_mode_and_the_evaluation_checks_its_flags(capsys, tmp_path):
    """--compare and --corruption list are argparse options that --help shows; an evaluation still needs --ckpt,
    --dataroot and --out; an Evaluation whose flags mean nothing together is refused before anything loads."""
    import eval as command
    from fusion.evaluate import Evaluation, evaluate

    with pytest.raises(SystemExit):
        command.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--compare OUT [OUT ...]" in text and "'list' prints the names" in text
    assert command.parse_args(["--corruption", "list"]).corruption == "list"
    assert command.parse_args(["--compare", "a", "b"]).compare == ["a", "b"]
    with pytest.raises(SystemExit):
        command.parse_args(["--ckpt", "x.ckpt", "--dataroot", "d"])
    assert "required: --out" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--compare: .*no such file"):
        command.main(["--compare", str(tmp_path)])
    never = str(tmp_path / "missing.ckpt")  # the checks come first: the missing checkpoint is never opened
    for bad, message in ((dict(severity=2), "--severity needs --corruption"),
                         (dict(budget=0.5, sensors="lidar=fine"), "cannot be combined with --sensors"),
                         (dict(price=1.0), "it needs --budget"),
                         (dict(gate_offsets=4), "they need --budget"),
                         (dict(budget=0.5, operating_point="m.json", price=1.0), "cannot be combined"),
                         (dict(batch_size=0), "--batch-size must be >= 1"),
                         (dict(measure_frames=-1), "--measure-frames >= 0")):
        with pytest.raises(ValueError, match=message):
            evaluate(Evaluation(ckpt=never, dataroot=str(tmp_path), out=str(tmp_path / "o"), **bad))
    with pytest.raises(ValueError, match="no such file"):
        evaluate(Evaluation(ckpt=never, dataroot=str(tmp_path), out=str(tmp_path / "o")))


def test_batches_give_the_boxes_of_single_frames_and_latency_is_measured_alone_on_a_sample(tiny_run, tiny_world,
                                                                                           tmp_path, capsys):
    """Detection at batch size 3 writes the boxes of batch size 1 (scores within 1e-4); latency and FLOPs are measured
    at batch size 1 on --measure-frames frames evenly spread over the split (NaN on the others, none with 0); the
    throughput is that of the run's batch size; --progress draws a bar with frames/s on stderr."""
    from eval import main

    ckpt, cache = tiny_run
    common = ["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--split", "synth_val", "--num-workers", "0",
              "--cache-dir", str(cache), "--no-score"]
    one = main(common + ["--out", str(tmp_path / "b1"), "--measure-frames", "0", "--no-progress"])
    assert "frame/s" not in capsys.readouterr().err
    three = main(common + ["--out", str(tmp_path / "b3"), "--batch-size", "3", "--measure-frames", "2", "--progress"])
    assert "frame/s" in capsys.readouterr().err
    results = [json.loads((tmp_path / d / "results.json").read_text())["results"] for d in ("b1", "b3")]
    assert set(results[0]) == set(results[1]) and sum(len(v) for v in results[0].values()) > 0
    for token, rows in results[0].items():
        assert len(rows) == len(results[1][token])
        for a, b in zip(rows, results[1][token]):
            assert a["detection_name"] == b["detection_name"] and a["attribute_name"] == b["attribute_name"]
            assert a["detection_score"] == pytest.approx(b["detection_score"], abs=1e-4)
            for key in ("translation", "size", "rotation", "velocity"):
                assert a[key] == pytest.approx(b[key], abs=1e-4)
    records = [[json.loads(x) for x in (tmp_path / d / "records.jsonl").read_text().splitlines()] for d in ("b1", "b3")]
    assert len(records[1]) == three["frames"] == 4
    assert [i for i, r in enumerate(records[1]) if r["latency_ms"] > 0 and r["gflops"] > 0] == [0, 2]
    assert all(math.isnan(r["latency_ms"]) and math.isnan(r["gflops"]) for r in records[1][1::2] + records[0])
    assert three["measured_frames"] == 2 and three["latency_ms"]["p95"] >= three["latency_ms"]["p50"] > 0
    assert three["throughput"]["batch_size"] == 3 and three["throughput"]["frames_per_s"] > 0
    assert one["measured_frames"] == 0 and math.isnan(one["latency_ms"]["mean"])


def test_mixed_precision_runs_on_cuda_only(tmp_path):
    """--precision 16-mixed / bf16-mixed are refused off CUDA with an error saying what to use, before anything loads;
    on CUDA they run detection under torch.autocast."""
    from datasets.evaluation import autocast
    from fusion.evaluate import Evaluation, evaluate

    never = str(tmp_path / "missing.ckpt")
    for precision in ("16-mixed", "bf16-mixed"):
        with pytest.raises(ValueError, match=f"--precision {precision} is mixed precision on CUDA; on cpu evaluate "
                                             "with --precision 32"):
            evaluate(Evaluation(ckpt=never, dataroot=str(tmp_path), out=str(tmp_path / "o"), device="cpu",
                                precision=precision))
    with pytest.raises(ValueError, match="--precision 'fp8': one of 32, 16-mixed, bf16-mixed"):
        autocast("cpu", "fp8")
    with autocast("cpu", "32"):
        assert not torch.is_autocast_enabled("cuda")
    if torch.cuda.is_available():
        with autocast("cuda", "16-mixed"):
            x = torch.ones(4, 4, device="cuda")
            assert (x @ x).dtype == torch.float16
