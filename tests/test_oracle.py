"""bench/oracle.py: the per-frame score, the choice of the cheapest configuration as good as full fusion, the merge of
per-frame picks from eval.py folders, and the CLI end to end on the tiny world with two configurations."""
import json

import pytest

from bench.common import config_folder
from bench.frame_oracle import FULL, choose, frame_groups, frame_score, oracle_results

LIDAR_RADAR = "camera=off,lidar=fine,radar=on"
RADAR = "camera=off,lidar=off,radar=on"


def box(x, y, name="car", score=None):
    b = {"translation": [x, y, 0.5], "detection_name": name}
    return b if score is None else {**b, "detection_score": score}


def test_frame_score_counts_matches_and_false_positives():
    gt = [box(0, 0), box(10, 0), box(20, 0, "pedestrian")]
    assert frame_score([box(0.5, 0.5, score=0.9)], gt, 0.3) == (1, 0)
    assert frame_score([box(0, 0, score=0.9), box(10, 1.5, score=0.8)], gt, 0.3) == (2, 0)
    # the pedestrian's position with the wrong class matches nothing: a false positive
    assert frame_score([box(20, 0, "car", score=0.9)], gt, 0.3) == (0, 1)
    assert frame_score([box(20, 0, "pedestrian", score=0.9)], gt, 0.3) == (1, 0)
    # 2 m and beyond is no match (the devkit's min_dist < dist_th); 1.99 m is
    assert frame_score([box(2.0, 0, score=0.9)], gt, 0.3) == (0, 1)
    assert frame_score([box(1.99, 0, score=0.9)], gt, 0.3) == (1, 0)
    assert frame_score([box(1.5, 1.5, score=0.9)], gt, 0.3) == (0, 1)  # 2.12 m in x-y
    assert frame_score([box(0, 0, score=0.9)], [{**box(0, 0), "translation": [0, 0, 30]}], 0.3) == (1, 0)  # x-y only
    # below (or at) the threshold a detection neither matches nor counts as a false positive
    assert frame_score([box(0, 0, score=0.2), box(50, 50, score=0.3)], gt, 0.3) == (0, 0)
    assert frame_score([box(50, 50, score=0.31)], gt, 0.3) == (0, 1)
    assert frame_score([], gt, 0.3) == (0, 0) and frame_score([box(0, 0, score=0.9)], [], 0.3) == (0, 1)


def test_one_ground_truth_box_is_matched_once_best_score_first():
    gt = [box(0, 0), box(3.5, 0)]
    # two detections on one box: the second is a false positive
    assert frame_score([box(0, 0, score=0.9), box(0.1, 0, score=0.8)], gt[:1], 0.3) == (1, 1)
    # greedy by descending score: the best detection (1.7 m from x=0, 1.8 m from x=3.5) takes its nearest box,
    # x=0, and the other one (0.2 m from x=0, 3.3 m from x=3.5) is left with nothing, although assigning them the
    # other way round would match both
    assert frame_score([box(1.7, 0, score=0.9), box(0.2, 0, score=0.5)], gt, 0.3) == (1, 1)
    assert frame_score([box(1.7, 0, score=0.5), box(0.2, 0, score=0.9)], gt, 0.3) == (2, 0)
    # the nearest free box, not the first one listed
    assert frame_score([box(0, 0, score=0.9), box(3.0, 0, score=0.5)], [box(1.5, 0), box(0.2, 0)], 0.3) == (2, 0)


def test_choose_takes_the_cheapest_configuration_as_good_as_full():
    costs = {FULL: (1.0, 10.0, 50.0), LIDAR_RADAR: (0.5, 6.0, 20.0), RADAR: (0.2, 1.0, 5.0)}
    assert choose({FULL: (3, 1), LIDAR_RADAR: (3, 1), RADAR: (2, 0)}, costs, FULL) == LIDAR_RADAR
    assert choose({FULL: (3, 1), LIDAR_RADAR: (4, 0), RADAR: (3, 0)}, costs, FULL) == RADAR  # better also qualifies
    assert choose({FULL: (3, 1), LIDAR_RADAR: (3, 2), RADAR: (2, 0)}, costs, FULL) == FULL  # more false positives
    assert choose({FULL: (0, 0), LIDAR_RADAR: (0, 0), RADAR: (0, 0)}, costs, FULL) == RADAR
    # equal cost and GFLOPs: lower ms, then the earlier key
    tie = {FULL: (1.0, 10.0, 50.0), LIDAR_RADAR: (0.2, 1.0, 9.0), RADAR: (0.2, 1.0, 5.0)}
    assert choose({FULL: (1, 0), LIDAR_RADAR: (1, 0), RADAR: (1, 0)}, tie, FULL) == RADAR
    same = {FULL: (1.0, 10.0, 50.0), LIDAR_RADAR: (0.2, 1.0, 5.0), RADAR: (0.2, 1.0, 5.0)}
    assert choose({FULL: (1, 0), LIDAR_RADAR: (1, 0), RADAR: (1, 0)}, same, FULL) == LIDAR_RADAR
    assert choose({FULL: (1, 0), RADAR: (1, 0), LIDAR_RADAR: (1, 0)}, same, FULL) == RADAR
    # the cost (the latency table's fraction of full) decides before GFLOPs
    flops_lie = {FULL: (1.0, 10.0, 50.0), LIDAR_RADAR: (0.3, 0.5, 9.0), RADAR: (0.2, 1.0, 5.0)}
    assert choose({FULL: (1, 0), LIDAR_RADAR: (1, 0), RADAR: (1, 0)}, flops_lie, FULL) == RADAR
    with pytest.raises(ValueError, match="full fusion"):
        choose({RADAR: (1, 0)}, costs, FULL)


def write_eval_dir(path, frames):
    """A fake eval.py folder: frames = [(token, gflops, ms, detections, conditions, faults)]."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text("{}")
    (path / "results.json").write_text(json.dumps({"meta": {}, "results": {
        t: [{**d, "sample_token": t} for d in dets] for t, _, _, dets, _, _ in frames}}))
    (path / "records.jsonl").write_text("".join(json.dumps(
        {"sample_token": t, "scene": "s", "cost": g / 10, "gflops": g, "latency_ms": ms, "detections": len(dets),
         "conditions": cond, "faults": faults}) + "\n" for t, g, ms, dets, cond, faults in frames))
    return path


def test_oracle_results_merges_each_frames_pick(tmp_path):
    gt = {"a": [box(0, 0)], "b": [box(0, 0), box(10, 0)], "c": []}
    hit, hit2, ghost = box(0, 0, score=0.9), box(10, 0, score=0.8), box(30, 30, score=0.9)
    full = write_eval_dir(tmp_path / "full", [("a", 10.0, 50.0, [hit], ["day"], []),
                                              ("b", 10.0, 50.0, [hit, hit2], ["night"], ["lidar"]),
                                              ("c", 10.0, 50.0, [ghost], ["day"], [])])
    radar = write_eval_dir(tmp_path / "radar", [("c", 1.0, 5.0, [], ["day"], []),  # another order of frames
                                                ("a", 1.0, 5.0, [hit, box(0, 0.2, score=0.1)], ["day"], []),
                                                ("b", 1.0, 5.0, [hit], ["night"], ["lidar"])])
    merged, choices = oracle_results({RADAR: radar, FULL: full}, gt, 0.3)
    assert [c["sample_token"] for c in choices] == ["a", "b", "c"]  # full's order
    assert [c["config"] for c in choices] == [RADAR, FULL, RADAR]
    assert [c["score"] for c in choices] == [(1, 0), (2, 0), (0, 0)]
    assert [c["full_score"] for c in choices] == [(1, 0), (2, 0), (0, 1)]
    assert choices[1]["scores"] == {FULL: (2, 0), RADAR: (1, 0)}
    assert [c["gflops"] for c in choices] == [1.0, 10.0, 1.0] and choices[0]["latency_ms"] == 5.0
    assert choices[1]["faults"] == ["lidar"] and choices[1]["camera"] == "high" and choices[0]["lidar"] == "off"
    # each frame's rows come unfiltered from the chosen configuration (the low-score box included)
    assert [len(merged[t]) for t in "abc"] == [2, 2, 0] and merged["b"][1]["translation"] == [10, 0, 0.5]
    # a threshold above every score: all score 0, so the cheaper configuration everywhere
    assert [c["config"] for c in oracle_results({RADAR: radar, FULL: full}, gt, 0.95)[1]] == [RADAR] * 3
    # a keep filter that drops what is beyond 20 m makes the ghost harmless: full's score in c becomes 0
    def near(results):
        return {t: [d for d in rows if abs(d["translation"][0]) < 20] for t, rows in results.items()}
    assert oracle_results({RADAR: radar, FULL: full}, gt, 0.3, keep=near)[1][2]["full_score"] == (0, 0)
    with pytest.raises(ValueError, match="full fusion"):
        oracle_results({RADAR: radar}, gt, 0.3)
    short = write_eval_dir(tmp_path / "short", [("a", 1.0, 5.0, [], [], [])])
    with pytest.raises(ValueError, match="no record of 2"):
        oracle_results({FULL: full, RADAR: short}, gt, 0.3)


def test_frame_groups_conditions_faults_and_traffic():
    def ch(t, gt, cond, faults=()):
        return {"sample_token": t, "scene": "s", "gt": gt, "conditions": list(cond), "faults": list(faults)}
    groups = frame_groups([ch("a", 0, ["day", "traffic-sparse"]), ch("b", 25, ["night"], ["lidar"]),
                           ch("c", 5, ["day"]), ch("d", 6, ["night", "traffic-dense"])], empty_max=5, dense_min=20)
    assert groups == {"day": ["a", "c"], "night": ["b", "d"], "fault": ["b"], "no-fault": ["a", "c", "d"],
                      "traffic-dense": ["d"], "traffic-sparse": ["a"], "empty": ["a", "c"], "dense": ["b"]}
    assert list(groups)[-2:] == ["empty", "dense"]
    assert "dense" not in frame_groups([ch("a", 19, ["day"])], dense_min=20)


def test_oracle_cli_end_to_end_on_the_tiny_world(tiny_world, tiny_run, tmp_path, capsys):
    """Two configurations, two frames: eval.py runs for each, then the oracle. The one-step model detects nothing
    above the threshold, so every frame ties with full fusion and goes to the cheaper radar-only configuration;
    --reuse then evaluates nothing again."""
    from bench.oracle import main

    ckpt, cache = tiny_run
    argv = ["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--out", str(tmp_path / "oracle"), "--limit", "2",
            "--configs", FULL, RADAR, "--num-workers", "0", "--cache-dir", str(cache),
            "--device", "cpu"]
    m = main(argv)
    out = tmp_path / "oracle"
    assert (out / config_folder(FULL) / "records.jsonl").is_file() and (out / config_folder(RADAR)).is_dir()
    choices = [json.loads(line) for line in (out / "oracle" / "choices.jsonl").read_text().splitlines()]
    assert len(choices) == m["frames"] == 2 and m["configs"] == [FULL, RADAR]
    assert all(c["config"] == RADAR and c["score"][0] >= c["full_score"][0] for c in choices)
    assert m["gflops_per_frame"]["mean"] < m["full"]["gflops_per_frame"]["mean"]
    assert m["per_group"]["overall"]["selection"]["camera"] == {"off": 1.0, "low": 0.0, "high": 0.0}
    results = json.loads((out / "oracle" / "results.json").read_text())
    assert sorted(results["results"]) == sorted(c["sample_token"] for c in choices)
    assert results["meta"]["use_camera"] is False and results["meta"]["use_radar"] is True
    saved = json.loads((out / "oracle" / "metrics.json").read_text())
    assert saved["nds"] == m["nds"] and saved["limit"] == 2 and saved["split"] == "synth_val"
    text = capsys.readouterr().out
    assert "| overall" in text and "camera off" in text
    main(argv + ["--reuse"])
    assert capsys.readouterr().out.count("reusing") == 2
    with pytest.raises(SystemExit):  # full fusion missing: refused before anything runs
        main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--out", str(tmp_path / "no"), "--configs", RADAR])
    assert not (tmp_path / "no").exists()
