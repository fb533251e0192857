"""sensors/corruptions.py, eval.py --corruption and bench/robustness.py: each corruption changes only what it names,
harm grows with severity, the seed is (token, corruption, severity), missing sensors reach the model as absent."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sensors.corruptions import CORRUPTIONS, Corruption, corrupt, describe, spec
from sensors.frame import collate
from sensors.geometry import points_in_boxes
from sensors.names import SENSORS


@pytest.fixture(scope="module")
def dataset(tiny_world, tmp_path_factory):
    from datasets.nuscenes import NuScenesDataset

    return NuScenesDataset(str(tiny_world), "v1.0-synth", "synth_val", image_size=(160, 90), stale_readings=True,
                           cache_dir=str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def frame(dataset):
    """A key frame with a previous key frame in its scene (so that it has stale readings)."""
    f = dataset[1]
    assert f.lidar.stale is not None and f.radar.stale is not None and f.present.all()
    return replace(f, camera=f.camera.to("cpu"))  # images as float32 in [0, 1], as corruptions compute them


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _parts(f) -> dict:
    """Every tensor of a frame, grouped by the sensor it belongs to (None: ground truth and present of others)."""
    return {"camera": [f.camera.images, f.camera.intrinsics, f.camera.ego_T_cam, f.camera.valid],
            "lidar": [f.lidar.points, f.lidar.ring, f.lidar.stale, f.lidar.batch_index],
            "radar": [f.radar.points, f.radar.stale, f.radar.batch_index]}


def _clone(f):
    return replace(f, camera=replace(f.camera, images=f.camera.images.clone()),
                   lidar=replace(f.lidar, points=f.lidar.points.clone()), present=f.present.clone())


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_changes_what_it_names_and_nothing_else(frame, name):
    s = CORRUPTIONS[name]
    before = _clone(frame)
    out = corrupt(frame, name, 5 if s.has_severity else None)
    assert all(_same(a, b) for a, b in zip(_parts(frame)["camera"][:1] + _parts(frame)["lidar"][:1],
                                           _parts(before)["camera"][:1] + _parts(before)["lidar"][:1]))  # input kept
    assert out.meta == frame.meta and _same(out.gt.boxes, frame.gt.boxes) and _same(out.gt.labels, frame.gt.labels)
    changed = set()
    for sensor in SENSORS:
        i = SENSORS.index(sensor)
        same = all(_same(a, b) for a, b in zip(_parts(out)[sensor], _parts(frame)[sensor]))
        same = same and bool(out.present[i]) == bool(frame.present[i])
        if not same:
            changed.add(sensor)
    assert changed == set(s.sensors), f"{name} changed {changed}, names {s.sensors}"


def _psnr(f, g) -> float:
    mse = float(((f.camera.images - g.camera.images) ** 2).mean())
    return 10 * math.log10(1.0 / mse)


def _chamfer(a: torch.Tensor, b: torch.Tensor, n: int = 1500) -> float:
    """Symmetric mean nearest-neighbour distance of xyz point sets, each subsampled to n points (the same rows of
    both where they have as many, so that an unchanged set scores 0)."""
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(a), generator=g)[:n]
    a, b = a[pick, :3], b[pick if len(a) == len(b) else torch.randperm(len(b), generator=g)[:n], :3]
    d = torch.cdist(a, b)
    return float(d.min(1).values.mean() + d.min(0).values.mean()) / 2


def _boxes_hit(f) -> float:
    """Share of GT boxes with at least one LiDAR point inside."""
    inside = points_in_boxes(f.lidar.points.numpy(), f.gt.boxes.numpy())
    return float(inside.any(0).mean())


def _pixel_shift(f, g) -> float:
    """Mean pixel distance between the GT box centres projected with the clean and the corrupted extrinsics."""
    centres = torch.cat([f.gt.boxes[:, :3], torch.ones(len(f.gt.boxes), 1)], 1)
    total, count = 0.0, 0
    for i in range(len(f.camera.valid)):
        pix = []
        for ego_T_cam in (f.camera.ego_T_cam[i], g.camera.ego_T_cam[i]):
            cam = (torch.linalg.inv(ego_T_cam) @ centres.T)[:3]
            pix.append((f.camera.intrinsics[i] @ cam)[:2] / cam[2].clamp_min(1e-3))
            front = cam[2] > 1.0
        total += float((pix[0] - pix[1]).norm(dim=0)[front].sum())
        count += int(front.sum())
    return total / max(count, 1)


def _stale_share(f, name, severity, n=200) -> float:
    """Share of n copies of the frame (tokens 0..n-1) whose LiDAR became the stale reading."""
    hits = 0
    for k in range(n):
        g = replace(f, meta=replace(f.meta, sample_token=f"token-{k}"))
        hits += not _same(corrupt(g, name, severity).lidar.points, f.lidar.points)
    return hits / n


HARM = {  # corruption -> (statistic of (clean, corrupted), +1: grows with harm, -1: falls)
    "camera_noise": (_psnr, -1), "camera_motion_blur": (_psnr, -1), "camera_dark": (_psnr, -1),
    "camera_overexposure": (_psnr, -1), "camera_fog": (_psnr, -1), "camera_occlusion": (_psnr, -1),
    "camera_extrinsic": (_pixel_shift, 1),
    "lidar_point_drop": (lambda f, g: _boxes_hit(g), -1), "lidar_beam_reduction": (lambda f, g: _boxes_hit(g), -1),
    "lidar_fov": (lambda f, g: _boxes_hit(g), -1),
    "lidar_fog": (lambda f, g: _chamfer(f.lidar.points, g.lidar.points), 1),
    "lidar_jitter": (lambda f, g: _chamfer(f.lidar.points, g.lidar.points), 1),
    "lidar_crosstalk": (lambda f, g: _chamfer(f.lidar.points, g.lidar.points), 1),
    "radar_dropout": (lambda f, g: -len(g.radar.points), 1),
    "radar_ghosts": (lambda f, g: _chamfer(f.radar.points, g.radar.points), 1),
    "radar_velocity_noise": (lambda f, g: float((f.radar.points[:, 4:6] - g.radar.points[:, 4:6]).norm(dim=1).mean()),
                             1),
    "spatial_misalignment": (lambda f, g: _chamfer(f.lidar.points, g.lidar.points), 1),
}


def test_every_graded_corruption_has_a_harm_statistic():
    graded = {n for n, s in CORRUPTIONS.items() if s.has_severity}
    assert graded - set(HARM) == {"temporal_misalignment"}  # tested on its own below


@pytest.mark.parametrize("name", list(HARM))
def test_harm_grows_with_severity(frame, name):
    """Mean of the statistic over four draws (the frame under four sample tokens) per severity."""
    stat, sign = HARM[name]
    frames = [replace(frame, meta=replace(frame.meta, sample_token=f"{frame.meta.sample_token}-{k}")) for k in range(4)]
    values = [sign * float(np.mean([stat(f, corrupt(f, name, s)) for f in frames])) for s in (1, 2, 3, 4, 5)]
    assert all(b >= a for a, b in zip(values, values[1:])), (name, values)
    assert values[-1] > values[0], (name, values)


def test_temporal_misalignment_hits_more_frames_with_severity(frame):
    shares = [_stale_share(frame, "temporal_misalignment", s, n=100) for s in (1, 3, 5)]
    assert shares[0] < shares[1] < shares[2] == 1.0 and 0.05 < shares[0] < 0.4, shares


def test_stuck_lidar_is_the_previous_key_frame_and_the_first_frame_stays_current(dataset, frame):
    out = corrupt(frame, "lidar_stuck")
    assert _same(out.lidar.points, frame.lidar.stale) and (out.lidar.ring == -1).all() and out.present[1]
    first = dataset[0]
    assert first.lidar.stale is None and _same(corrupt(first, "lidar_stuck").lidar.points, first.lidar.points)


def test_beam_reduction_keeps_evenly_spaced_rings_read_from_the_data(frame):
    n = int(frame.lidar.ring.max()) + 1
    assert n == 32
    kept = []
    for severity, beams in ((1, 24), (2, 16), (3, 12), (4, 8), (5, 4)):
        kept.append(set(corrupt(frame, "lidar_beam_reduction", severity).lidar.ring.tolist()))
        assert len(kept[-1]) == beams, (severity, sorted(kept[-1]))
        if 32 % beams == 0:
            assert kept[-1] == set(range(0, 32, 32 // beams)), (severity, sorted(kept[-1]))
    assert all(a > b for a, b in zip(kept, kept[1:]))  # each severity keeps a subset of the one below


def test_same_seed_same_corruption_other_token_another(frame):
    other = replace(frame, meta=replace(frame.meta, sample_token=frame.meta.sample_token + "x"))
    for name, field in (("camera_noise", lambda f: f.camera.images), ("lidar_point_drop", lambda f: f.lidar.points),
                        ("radar_ghosts", lambda f: f.radar.points), ("camera_missing_one", lambda f: f.camera.valid)):
        severity = 3 if CORRUPTIONS[name].has_severity else None
        a, b = corrupt(frame, name, severity), corrupt(frame, name, severity)
        assert _same(field(a), field(b)), name
        if name != "camera_missing_one":  # one of six cameras: two tokens may pick the same
            assert not _same(field(a), field(corrupt(other, name, severity))), name
    # the augment hook ignores the loader's per-item generator
    hook = Corruption("lidar_jitter", 2)
    assert _same(hook(frame, np.random.default_rng(1)).lidar.points, hook(frame, np.random.default_rng(2)).lidar.points)
    picks = {int(np.flatnonzero(~corrupt(replace(frame, meta=replace(frame.meta, sample_token=f"t{k}")),
                                         "camera_missing_one").camera.valid.numpy())[0]) for k in range(40)}
    assert len(picks) > 2


def test_missing_sensors_reach_the_detector_as_not_present(frame):
    from fusion.module import GateFusionModule

    frames = [corrupt(frame, "lidar_missing"), corrupt(frame, "camera_missing_one"), corrupt(frame, "radar_missing"),
              corrupt(frame, "camera_missing_all"), frame]
    batch = collate(frames)
    assert batch.present.tolist() == [[True, False, True], [True, True, True], [True, True, False],
                                      [False, True, True], [True, True, True]]
    assert batch.camera.valid.sum(1).tolist() == [6, 5, 6, 0, 6]
    assert int((batch.lidar.batch_index == 0).sum()) == 0 and int((batch.radar.batch_index == 2).sum()) == 0
    assert batch.lidar.ring is not None and len(batch.lidar.ring) == len(batch.lidar.points)
    model = GateFusionModule(bev_range=25.6, bev_cell=3.2, camera_width=4, camera_channels=8, camera_heights=2,
                             camera_bev_factor=1, lidar_channels=8, radar_channels=8, fusion_channels=8,
                             bev_channels=8, head_channels=8)
    _, records = model.detect(batch)
    assert [(r.camera, r.lidar, r.radar) for r in records] == [
        ("high", "off", "on"), ("high", "fine", "on"), ("high", "fine", "off"), ("off", "fine", "on"),
        ("high", "fine", "on")]


def test_bad_name_or_severity_is_a_clear_error_listing_the_valid_ones(frame):
    with pytest.raises(ValueError, match=r"unknown corruption 'lidar_sonw'; valid corruptions: camera_noise, .*"
                                         r"lidar_fog, .*temporal_misalignment"):
        corrupt(frame, "lidar_sonw", 3)
    with pytest.raises(ValueError, match=r"'lidar_fog' needs a severity in \[1, 2, 3, 4, 5\], got 7"):
        Corruption("lidar_fog", 7)
    with pytest.raises(ValueError, match=r"needs a severity in \[1, 2, 3, 4, 5\], got None"):
        Corruption("camera_noise")
    with pytest.raises(ValueError, match=r"'radar_missing' is a fault without severity; got severity 2"):
        spec("radar_missing", 2, check_severity=True)
    lines = describe().splitlines()
    assert len(lines) == len(CORRUPTIONS) and "no severity" in lines[[n for n in CORRUPTIONS].index("lidar_missing")]


def test_eval_py_records_the_corruption_and_runs_without_the_missing_lidar(tiny_run, tiny_world, tmp_path, capsys):
    import json

    import eval as evaluate

    ckpt, cache = tiny_run
    common = ["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--split", "synth_val", "--num-workers", "0",
              "--cache-dir", str(cache), "--limit", "2", "--measure-frames", "0"]
    m = evaluate.main(common + ["--out", str(tmp_path / "e"), "--corruption", "lidar_missing"])
    saved = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert saved["corruption"] == m["corruption"] == "lidar_missing" and saved["severity"] is None
    records = [json.loads(x) for x in (tmp_path / "e" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["lidar"] == "off" and r["camera"] == "high" for r in records)
    assert evaluate.main(["--corruption", "list"]) == {} and "lidar_missing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown corruption 'fog'; valid corruptions: camera_noise"):
        evaluate.main(common + ["--out", str(tmp_path / "x"), "--corruption", "fog"])
    with pytest.raises(ValueError, match="--severity needs --corruption"):
        evaluate.main(common + ["--out", str(tmp_path / "x"), "--severity", "2"])


def test_robustness_bench_reports_ra_and_skips_what_cannot_matter(tiny_run, tiny_world, tmp_path, capsys):
    from bench import robustness

    ckpt, _ = tiny_run
    with pytest.raises(SystemExit):
        robustness.main(["--ckpt", str(ckpt), "--only", "lidar_sonw"])
    assert "valid corruptions: camera_noise" in capsys.readouterr().err
    results = robustness.main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--sensors", "lidar=fine,radar=on",
                               "--only", "camera_noise", "radar_missing", "--severities", "2", "--limit", "2",
                               "--num-workers", "0", "--out", str(tmp_path / "rob")])
    out = capsys.readouterr().out
    r = next(iter(results.values()))
    assert r["runs"][("camera_noise", 2)] is None
    assert r["runs"][("radar_missing", None)]["corruption"] == "radar_missing"
    assert r["summary"]["ra_corruption"]["camera_noise"] == 1.0
    assert "skipped: cannot affect this configuration (RA 1)" in out and "radar off 100%" in out
    assert "mRA" in out and "min wall time" in out


def test_robustness_bench_runs_the_gate_at_its_clean_price(tiny_run, tiny_gated_run, tiny_gate_budget, tiny_world,
                                                           tmp_path, capsys):
    from bench import robustness

    static, gated, b = str(tiny_run[0]), str(tiny_gated_run / "checkpoints" / "last.ckpt"), tiny_gate_budget
    results = robustness.main(["--ckpt", static, gated, "--dataroot", str(tiny_world), "--sensors",
                               "lidar=fine,radar=on", "--budgets", str(b), "--only", "lidar_missing", "camera_dark",
                               "--severities", "5", "--limit", "3", "--num-workers", "0", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert [k[1] for k in results] == ["camera=off,lidar=fine,radar=on", f"gate, budget {b}"]
    r = results[(gated, f"gate, budget {b}")]
    assert r["clean"]["budget"] == b and r["clean"]["price"] is not None
    # none skipped; each runs at the clean run's price (no steering by default)
    assert all(m is not None and m["price"] == r["clean"]["price"] and m["budget_control"] == 0.0
               for m in r["runs"].values())
    assert r["selections"][("lidar_missing", None)]["lidar"] == {"off": 1.0}  # it spends nothing on a dead LiDAR
    assert "moved from clean" in out and (tmp_path / "r" / "run-1" / f"budget-{b}" / "camera_dark_5" /
                                          "metrics.json").is_file()
    # the table across both runs: the static run never met the camera corruption (*), the gate did, with its cost
    row = next(line for line in out.splitlines() if line.startswith("| camera_dark |"))
    ra, cost = r["summary"]["ra_corruption"]["camera_dark"], r["runs"][("camera_dark", 5)]["cost_per_frame"]["mean"]
    assert "1.000*" in row and row.endswith(f"| {ra:.3f} ({cost:.2f}) |")  # RA (cost); finite: test_bench.py
    assert "| **mRA** | all |" in out


def test_robustness_frontier_sets_the_gate_against_the_statics_under_the_same_fault(tiny_gated_run, tiny_gate_budget,
                                                                                      tiny_world, tmp_path, capsys,
                                                                                      monkeypatch):
    """--frontier: a gated checkpoint also runs the static configurations (three here, for time) under the same
    corruptions, and the gate's margin is over their hull under each fault, a configuration the fault cannot touch
    keeping its clean point."""
    from bench import robustness
    from bench.common import frontier_at, upper_hull

    with pytest.raises(SystemExit):
        robustness.main(["--ckpt", str(tiny_gated_run / "checkpoints" / "last.ckpt"), "--frontier"])
    assert "--frontier: needs --budgets" in capsys.readouterr().err
    three = {"all high": "camera=high,lidar=fine,radar=on", "radar": "camera=off,lidar=off,radar=on",
             "lidar fine": "camera=off,lidar=fine,radar=off"}
    monkeypatch.setattr(robustness, "CONFIGS", three)
    gated = str(tiny_gated_run / "checkpoints" / "last.ckpt")
    b = tiny_gate_budget
    results = robustness.main(["--ckpt", gated, "--dataroot", str(tiny_world), "--budgets", str(b), "--frontier",
                               "--only", "lidar_missing", "--limit", "2", "--num-workers", "0",
                               "--out", str(tmp_path / "f")])
    out = capsys.readouterr().out
    assert [k[1] for k in results] == [f"gate, budget {b}", *three.values()]
    rows = results[(gated, f"gate, budget {b}")]["frontier"]
    assert [(r["corruption"], r["severity"]) for r in rows] == [("clean", None), ("lidar_missing", None)]
    assert results[(gated, three["radar"])]["runs"][("lidar_missing", None)] is None  # radar alone: skipped
    for r in rows:
        def under(label):
            res = results[(gated, label)]
            m = res["clean"] if r["corruption"] == "clean" else res["runs"][("lidar_missing", None)] or res["clean"]
            return m["cost_per_frame"]["mean"], m["nds"]
        hull = upper_hull({name: under(label) for name, label in three.items()})  # named as in CONFIGS
        nds, mix = frontier_at(hull, r["cost"])
        assert r["frontier_nds"] == pytest.approx(nds, nan_ok=True) and r["mix"] == mix
        assert r["margin"] == pytest.approx(r["nds"] - nds, nan_ok=True)
    assert "the gate against the static frontier" in out and f"| lidar_missing       |   - | {b:<6} |" in out


def test_frontier_rows_keep_a_skipped_configurations_clean_point():
    from bench.robustness import frontier_rows

    def m(cost, nds):
        return {"cost_per_frame": {"mean": cost}, "nds": nds}
    gates = {0.5: {"clean": m(0.5, 0.4), "runs": {("radar_missing", None): m(0.45, 0.38)}}}
    statics = {"cheap": {"clean": m(0.2, 0.2), "runs": {("radar_missing", None): m(0.1, 0.05)}},
               "dear": {"clean": m(1.0, 0.5), "runs": {("radar_missing", None): None}}}  # no radar: untouched
    clean, fault = frontier_rows(gates, statics)
    assert clean["frontier_nds"] == pytest.approx(0.2 + 0.3 / 0.8 * 0.3) and clean["mix"] == "cheap + dear"
    assert fault["frontier_nds"] == pytest.approx(0.05 + 0.35 / 0.9 * 0.45)
    assert fault["margin"] == pytest.approx(0.38 - fault["frontier_nds"]) and fault["cost"] == 0.45


def test_summary_counts_each_fault_once_and_averages_severities():
    from bench.robustness import summarize

    clean = {"nds": 0.5}
    runs = {("lidar_fog", 1): {"nds": 0.4}, ("lidar_fog", 3): {"nds": 0.2}, ("lidar_missing", None): {"nds": 0.25},
            ("camera_noise", 1): None}
    s = summarize(clean, runs)
    assert s["ra_corruption"] == pytest.approx({"lidar_fog": 0.6, "lidar_missing": 0.5, "camera_noise": 1.0})
    assert s["mra"] == pytest.approx(0.7) and s["mra_group"]["lidar"] == pytest.approx(0.55)
    assert s["mra_group"]["camera"] == 1.0 and s["mra_group"]["radar"] is None
    assert s["seen"] == [] and s["mra_unseen"] == pytest.approx(0.7)
    # a checkpoint trained on corrupted frames: its mRA also over the corruptions it did not see
    s = summarize(clean, runs, seen=("lidar_fog", "radar_missing"))
    assert s["seen"] == ["lidar_fog"] and s["mra_unseen"] == pytest.approx(0.75) and s["mra"] == pytest.approx(0.7)


# ------------------------------------------------------------------------------------ corruption as augmentation

def test_corruption_augment_draws_from_its_list_per_item_seed(frame):
    from datasets.augment import CorruptionAugment

    assert CorruptionAugment(("camera_noise",), 0.0)(frame, np.random.default_rng(0)) is frame
    aug = CorruptionAugment(("lidar_missing", "camera_noise"), 1.0)
    outs = [aug(frame, np.random.default_rng(k)) for k in range(30)]
    dead = [not bool(o.present[SENSORS.index("lidar")]) for o in outs]
    noisy = [not _same(o.camera.images, frame.camera.images) for o in outs]
    assert all(d != n for d, n in zip(dead, noisy)) and 5 < sum(dead) < 25  # exactly one of the two, both drawn
    for o, d in zip(outs, dead):  # the other sensors untouched, ground truth as loaded
        assert _same(o.radar.points, frame.radar.points) and _same(o.gt.boxes, frame.gt.boxes)
        assert _same(o.lidar.points, frame.lidar.points) != d
    # the item's generator decides: the same seed the same corruption, another seed another noise
    again = aug(frame, np.random.default_rng(3))
    assert _same(again.camera.images, outs[3].camera.images) and _same(again.present, outs[3].present)
    k, j = [i for i, n in enumerate(noisy) if n][:2]
    assert not _same(outs[k].camera.images, outs[j].camera.images)
    # severities are drawn: the noise's spread varies between items
    spreads = {round(float((o.camera.images - frame.camera.images).std()), 2) for o, n in zip(outs, noisy) if n}
    assert len(spreads) > 1


def test_corruption_augment_bad_config_is_a_clear_error(tiny_world, tmp_path):
    from datasets.augment import CorruptionAugment
    from datasets.datamodule import NuScenesDataModule

    with pytest.raises(ValueError, match=r"unknown corruption 'lidar_snow'.*valid corruptions: camera_noise"):
        NuScenesDataModule(str(tiny_world), train_corruptions=["lidar_snow"], train_corruption_prob=0.3)
    with pytest.raises(ValueError, match=r"train_corruption_prob.*\[0, 1\], got 1.5"):
        NuScenesDataModule(str(tiny_world), train_corruptions=["lidar_fog"], train_corruption_prob=1.5)
    with pytest.raises(ValueError, match="needs at least one corruption"):
        CorruptionAugment((), 0.5)
    # the training set loads stale readings only when a corruption that needs them can be drawn
    for names, stale in ((["lidar_fog"], False), (["lidar_fog", "lidar_stuck"], True)):
        dm = NuScenesDataModule(str(tiny_world), num_workers=0, cache_dir=str(tmp_path), train_corruptions=names,
                                train_corruption_prob=0.5)
        dm.setup("fit")
        assert dm.train_set.stale_readings is stale and dm.val_set.stale_readings is False
        assert dm.val_set.augment is None and dm.train_set.augment is not None


def test_cross_table_marks_corruptions_seen_in_training():
    from bench.robustness import format_summary, summarize

    clean = {"nds": 0.5}
    runs = {("lidar_fog", 1): {"nds": 0.4}, ("camera_dark", 1): {"nds": 0.3}, ("radar_missing", None): {"nds": 0.45}}
    results = {(f"runs/{name}/checkpoints/last.ckpt", "full"): {"clean": clean, "runs": runs,
                                                                "summary": summarize(clean, runs, seen)}
               for name, seen in (("plain", ()), ("robust", ("camera_dark",)))}
    out = format_summary(results)
    row = next(line for line in out.splitlines() if line.startswith("| camera_dark |"))
    assert row.endswith("| 0.600 | 0.600+ |")
    # the fair comparison: both runs over the corruptions neither saw (lidar_fog 0.8, radar_missing 0.9)
    assert "| mRA | not seen in training by any run (2) | 0.850 | 0.850 |" in out
    assert "not seen in training" not in format_summary({k: v for k, v in results.items() if "plain" in k[0]})
