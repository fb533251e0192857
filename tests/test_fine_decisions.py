"""Decisions below the sensor: camera views off/low/high per frame and LiDAR fine per BEV tile
(FusionDetector.forward's views and tiles), their costs (fusion/cost.py FineCosts) and the oracle that searches them
(bench/fine_oracle.py, bench/oracle.py --fine)."""
from __future__ import annotations

import json

import pytest
import torch

from fusion.cost import FineCosts, synthetic_frame
from fusion.detector import build_detector, tile_cells


@pytest.fixture(scope="module")
def detector_and_frame():
    torch.manual_seed(0)
    det = build_detector(bev_range=25.6, bev_cell=0.8, camera_width=4, camera_channels=8, lidar_channels=8,
                         radar_channels=4, lidar_motion=True, radar_doppler=True).eval()
    return det, synthetic_frame(det.grid, (160, 96), 4096, 100)


FULL = torch.tensor([[2, 2, 1]])


def test_a_view_turned_off_never_reaches_the_image_backbone(detector_and_frame):
    """The backbone sees only the views that run, and the result is the camera's with the others invalid, which
    never reach the backbone either (the image CNN's GroupNorm is per view: leaving them out changes nothing else)."""
    det, frame = detector_and_frame
    seen = []
    hook = det.camera.backbone.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    try:
        with torch.no_grad():
            one = det(frame, FULL, views=torch.tensor([[2, 0, 0, 0, 0, 0]])).heatmap
            assert seen == [1]
            frame.camera.valid[0, 1:] = False
            invalid = det(frame, FULL).heatmap
            assert seen == [1, 1]
    finally:
        hook.remove()
        frame.camera.valid[0, 1:] = True
    torch.testing.assert_close(one, invalid, atol=1e-5, rtol=1e-4)


def test_every_view_or_tile_at_the_top_is_the_frame_level_choice(detector_and_frame):
    det, frame = detector_and_frame
    with torch.no_grad():
        full = det(frame, FULL).heatmap
        assert torch.equal(det(frame, FULL, views=torch.full((1, 6), 2)).heatmap, full)
        assert torch.equal(det(frame, FULL, tiles=torch.ones(1, 4, 4, dtype=torch.bool)).heatmap, full)
        coarse = det(frame, torch.tensor([[2, 1, 1]])).heatmap
        assert torch.equal(det(frame, FULL, tiles=torch.zeros(1, 4, 4, dtype=torch.bool)).heatmap, coarse)
        low = det(frame, torch.tensor([[1, 2, 1]])).heatmap
        assert torch.equal(det(frame, FULL, views=torch.ones(1, 6, dtype=torch.long)).heatmap, low)


def test_tiles_mix_fine_and_coarse_by_cell_and_views_mix_by_coverage(detector_and_frame):
    """One fine tile: the LiDAR features are the fine mode's in its cells and the coarse mode's elsewhere. Views of
    both modes: the high views' features where they see, the low views' elsewhere."""
    det, frame = detector_and_frame
    idx = torch.zeros(1, dtype=torch.long)
    tiles = torch.zeros(1, 4, 4, dtype=torch.bool)
    tiles[0, 1, 2] = True
    cells = tile_cells(tiles, det.grid)[0]
    assert cells.sum() == det.grid.H * det.grid.W // 16 and cells[16:32, 32:48].all()
    with torch.no_grad():
        fine = det.run_encoder("lidar", frame, idx, "fine")
        coarse = det.run_encoder("lidar", frame, idx, "coarse")
        mixed = det.encode(frame, FULL, tiles=tiles)["lidar"]
        assert torch.equal(mixed[0][:, cells], fine[0][:, cells]) and torch.equal(mixed[0][:, ~cells],
                                                                                  coarse[0][:, ~cells])
        views = torch.tensor([[2, 1, 1, 1, 1, 1]])
        cam = det.encode(frame, FULL, views=views)["camera"][0]
        high = det.run_encoder("camera", frame, idx, "high", views=views == 2)[0]
        low = det.run_encoder("camera", frame, idx, "low", views=views == 1)[0]
    seen = det.camera.coverage(frame.camera, views == 2)[0, 0]
    xy = det.grid.cell_centers()
    assert seen[(xy[..., 0] > 5) & (xy[..., 1].abs() < 1)].all() and not seen[xy[..., 0] < -5].any()
    assert torch.equal(cam[:, seen], high[:, seen]) and torch.equal(cam[:, ~seen], low[:, ~seen])


def costs() -> FineCosts:
    return FineCosts(views=6, camera_fixed={"low": 1.0, "high": 2.0}, camera_view={"low": 0.5, "high": 3.0},
                     lidar_coarse=4.0, lidar_fine=10.0, lidar_tile=0.5, radar=1.0, shared=5.0, tiles=4)


def test_fine_costs_add_up():
    fc = costs()
    assert fc.full() == pytest.approx(5 + 1 + 2 + 18 + 10)
    assert fc.cost([2, 2, 0, 0, 0, 0]) == pytest.approx(5 + 1 + 2 + 6 + 10)
    assert fc.cost([2, 1, 1, 0, 0, 0], radar=False) == pytest.approx(5 + 2 + 3 + 1 + 1 + 10)
    tiles = torch.zeros(4, 4, dtype=torch.bool)
    tiles[0, :3] = True
    assert fc.cost([0] * 6, tiles) == pytest.approx(5 + 1 + 4 + 3 * 0.5)
    assert fc.cost([0] * 6, torch.ones(4, 4, dtype=torch.bool)) == fc.cost([0] * 6) == pytest.approx(16)
    assert fc.cost([0] * 6, lidar="off", radar=False) == pytest.approx(5)
    assert fc.parts([2, 1, 0, 0, 0, 0], tiles) == pytest.approx(
        {"shared": 5, "radar": 1, "camera fixed": 3, "camera views": 3.5, "lidar": 5.5})


def test_the_greedy_pass_keeps_only_what_the_frame_needs():
    """A frame whose score needs view 0 (at least low) and tile (1, 2): everything else is turned down, also from a
    cheaper start; a start worse than full is refused; a frame that needs nothing keeps one sensor on; tiles whose
    cost is above fine everywhere go back to fine everywhere."""
    from bench.fine_oracle import search

    fc = costs()

    def needs(views, tiles, lidar, radar):
        ok = views[0] >= 1 and lidar == "fine" and tiles[1][2]
        return (3, 0) if ok else (2, 1)

    def cost(views, tiles, lidar, radar):
        return fc.cost(views, tiles, lidar, radar) / fc.full()

    full = {"views": [2] * 6, "lidar": "fine", "radar": True}
    choice, runs = search(needs, full, full, 4, cost)
    assert choice["views"] == [1, 0, 0, 0, 0, 0] and choice["lidar"] == "fine" and not choice["radar"]
    assert [(r, c) for r in range(4) for c in range(4) if choice["tiles"][r][c]] == [(1, 2)]
    assert choice["score"] == [3, 0] and choice["cost"] == pytest.approx(cost(**{k: choice[k] for k in
                                                                               ("views", "tiles", "lidar", "radar")}))
    start = {"views": [2, 2, 0, 0, 0, 0], "lidar": "fine", "radar": False}  # from a cheaper start, downwards only
    assert search(needs, full, start, 4, cost)[0]["views"] == [1, 0, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="not as good"):
        search(needs, full, {**start, "views": [0] * 6}, 4, cost)
    nothing, _ = search(lambda **k: (0, 0), full, full, 4, cost)
    assert nothing["views"] == [0] * 6 and nothing["lidar"] == "off" and nothing["radar"]
    expensive = FineCosts(**{**vars(fc), "lidar_tile": 7.0})  # one fine tile costs more than fine everywhere
    kept, _ = search(needs, full, full, 4, lambda **k: expensive.cost(**k) / expensive.full())
    assert all(map(all, kept["tiles"])) and kept["lidar"] == "fine"


def test_fine_oracle_cli_on_the_tiny_world(tiny_world, tiny_run, tmp_path, capsys):
    """bench/oracle.py --fine on two frames: the static and fine oracles beside full fusion, their choices written;
    the one-step model detects nothing, so both oracles pick something cheaper than full."""
    from bench.oracle import main

    ckpt, cache = tiny_run
    m = main(["--ckpt", str(ckpt), "--dataroot", str(tiny_world), "--out", str(tmp_path), "--fine", "--frames", "2",
              "--repeats", "1", "--cache-dir", str(cache), "--device", "cpu"])
    assert m["frames"] == 2 and m["fine_oracle"]["cost"]["mean"] < 1.0 and m["static_oracle"]["cost"]["mean"] < 1.0
    choices = [json.loads(line) for line in (tmp_path / "fine" / "choices.jsonl").read_text().splitlines()]
    assert len(choices) == 2 and all(len(c["views"]) == 6 and len(c["tiles"]) == 4 for c in choices)
    for name in ("full", "static", "fine"):
        assert (tmp_path / "fine" / name / "results.json").is_file()
    assert "| per view and tile" in capsys.readouterr().out


def test_the_oracles_frame_runner_gives_the_detectors_detections(detector_and_frame):
    """FrameRunner (cached encoders, composited) detects what FusionDetector.forward does for the same choice."""
    from bench.fine_oracle import FrameRunner

    det, frame = detector_and_frame
    frame.meta[0].global_T_ego = torch.eye(4).tolist()
    views = [2, 0, 1, 1, 0, 2]
    tiles = [[r == c for c in range(4)] for r in range(4)]
    runner = FrameRunner(det, frame)
    got = runner.rows(views, tiles, "fine", True, score_threshold=0.0)
    with torch.no_grad():
        out = det(frame, FULL, views=torch.tensor([views]), tiles=torch.tensor([tiles]))
    from datasets.evaluation import detections_to_results
    want = detections_to_results(det.head.decode(out, 0.0), frame.meta)[frame.meta[0].sample_token]
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a["detection_name"] == b["detection_name"]
        assert a["detection_score"] == pytest.approx(b["detection_score"], abs=1e-5)
        assert a["translation"] == pytest.approx(b["translation"], abs=1e-4)


def test_a_batch_mixing_views_tiles_and_absent_sensors_detects_each_frame_as_alone(detector_and_frame):
    """Three frames in one batch (both camera modes / all views low / camera absent; LiDAR fine in one tile / fine
    everywhere / coarse) give each frame's output of that frame run alone."""
    from sensors.frame import collate

    det, frame = detector_and_frame
    batch = collate([frame_of(frame)] * 3)
    batch.present[2, 0] = False
    decisions = torch.tensor([[2, 2, 1], [1, 2, 1], [2, 1, 1]])
    views = torch.tensor([[2, 1, 1, 1, 1, 1], [1] * 6, [2] * 6])
    tiles = torch.ones(3, 4, 4, dtype=torch.bool)
    tiles[0] = False
    tiles[0, 2, 1] = True
    with torch.no_grad():
        together = det(batch, decisions, views=views, tiles=tiles).heatmap
        for b in range(3):
            alone = det(batch.select(torch.tensor([b])), decisions[b:b + 1], views=views[b:b + 1],
                        tiles=tiles[b:b + 1]).heatmap
            torch.testing.assert_close(together[b:b + 1], alone, atol=1e-5, rtol=1e-4)


def test_views_in_training_give_the_camera_losses_of_the_views_that_ran(detector_and_frame):
    """Training mode with views of both modes: the camera's depth and semantic losses (over the views that ran)
    exist and backpropagate into the image CNN."""
    det, frame = detector_and_frame
    det.train()
    try:
        out = det(frame, FULL, views=torch.tensor([[2, 0, 0, 1, 0, 0]]))
        assert out.camera_depth_loss is not None and out.camera_semantic_loss is not None
        (out.heatmap.mean() + out.camera_depth_loss + out.camera_semantic_loss).backward()
        assert det.camera.backbone.body[0][0].weight.grad.abs().sum() > 0
    finally:
        det.zero_grad()
        det.eval()


def test_bad_views_and_tiles_are_refused(detector_and_frame):
    det, frame = detector_and_frame
    with pytest.raises(ValueError, match="mode indices"):
        det(frame, FULL, views=torch.ones(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="0-2"):
        det(frame, FULL, views=torch.full((1, 6), 3))
    with pytest.raises(ValueError, match="bool"):
        det(frame, FULL, tiles=torch.ones(1, 4, 4, dtype=torch.long))


def frame_of(batch):
    """The one-frame batch's Frame (sensors/frame.py), to collate copies of it."""
    from sensors.frame import CameraData, Frame, LidarData, RadarData

    cam = batch.camera
    return Frame(CameraData(cam.images[0], cam.intrinsics[0], cam.ego_T_cam[0], cam.valid[0]),
                 LidarData(batch.lidar.points, batch.lidar.batch_index), RadarData(batch.radar.points,
                                                                                  batch.radar.batch_index),
                 batch.gt[0], batch.present[0], batch.meta[0])
