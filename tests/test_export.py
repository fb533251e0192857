"""fusion/export.py: `python -m fusion.export` on a tiny gated checkpoint writes one torch.export graph per gate, branch
and mode plus the shared part, each giving the eager outputs on a frame the export did not see (more points than
the budgets: the runtime's packing applies them), composed they give the detector's outputs, and a missing or bad
checkpoint is a clear error."""
from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from fusion.detector import SensorConfig, build_detector
from fusion.export import LidarGraph, export_graph, main, pack_points
from fusion.gate import glimpses
from fusion.module import GateFusionModule
from sensors.frame import LidarData, RadarData
from sensors.names import MODES, SENSORS
from tests.test_model import TINY, make_batch

TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def exported(tiny_gated_run, tmp_path_factory):
    """(manifest, out folder, model) of the tiny gated checkpoint's export."""
    out = tmp_path_factory.mktemp("export")
    ckpt = tiny_gated_run / "checkpoints" / "last.ckpt"
    manifest = main(["--ckpt", str(ckpt), "--out", str(out)])
    model = GateFusionModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    return manifest, out, model


def frame(image_hw: tuple[int, int], seed: int = 3):
    """One frame with the tiny images, and more LiDAR (5,000) and radar (800) points than the tiny budgets."""
    gen = torch.Generator().manual_seed(seed)
    batch = make_batch(B=1, hw=image_hw, seed=seed)

    def spread(n: int, dims: int) -> torch.Tensor:
        p = torch.rand(n, dims, generator=gen)
        p[:, :2] = p[:, :2] * 90 - 45
        p[:, 2] = p[:, 2] * 3 - 1
        p[:, 4] = p[:, 4] * 0.3
        return p

    batch.lidar = LidarData(torch.cat([batch.lidar.points, spread(5000, 5)]), torch.zeros(5160, dtype=torch.long))
    batch.radar = RadarData(torch.cat([batch.radar.points, spread(800, 7)]), torch.zeros(812, dtype=torch.long))
    return batch


def load(out, name):
    return torch.export.load(out / f"{name}.pt2").module()


def test_manifest_lists_every_graph(exported):
    manifest, out, model = exported
    names = [g["name"] for g in manifest["graphs"]]
    assert names == ["gate"] + [f"{s}_{m}" for s in SENSORS for m in MODES[s][1:]] + ["shared"]
    for g in manifest["graphs"]:
        assert (out / g["file"]).is_file() and g["inputs"] and g["outputs"] and g["notes"]
        assert g["cost"]["gflops"] > 0 and (g["name"] == "gate" or g["cost"]["ms"] > 0)
    lidar = {g["name"]: g for g in manifest["graphs"]}["lidar_fine"]
    assert lidar["inputs"]["points"]["shape"] == [1, model.detector.lidar.modes["fine"].max_points, 5]
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_each_graph_gives_the_eager_outputs(exported):
    manifest, out, model = exported
    detector = model.detector
    W, H = manifest["image_size"]
    batch = frame((H, W))
    cam, lidar, radar = batch.camera, batch.lidar, batch.radar
    with torch.no_grad():
        for mode in MODES["camera"][1:]:
            got = load(out, f"camera_{mode}")(cam.images, cam.intrinsics, cam.ego_T_cam, cam.valid.bool())
            torch.testing.assert_close(got, detector.camera(cam, mode)[0], **TOL)
        for mode in MODES["lidar"][1:]:
            budget = detector.lidar.modes[mode].max_points
            got = load(out, f"lidar_{mode}")(pack_points(lidar.points, lidar.batch_index, 1, budget, budget))
            torch.testing.assert_close(got, detector.lidar(lidar, 1, mode), **TOL)
        packed = pack_points(radar.points, radar.batch_index, 1, detector.radar.max_points, detector.radar.max_points)
        torch.testing.assert_close(load(out, "radar_on")(packed), detector.radar(radar, 1, "on"), **TOL)

        g, budget, present, price = glimpses(batch), torch.tensor([0.5]), batch.present.bool(), torch.tensor(0.3)
        got = load(out, "gate")(g, budget, present, price)
        logits = model.gate(batch, budget)
        torch.testing.assert_close(got["logits"], logits, **TOL)
        assert torch.equal(got["decisions"], model.gate.table[model.gate.decide(logits, 0.3)])


def test_graphs_composed_give_the_detector_outputs(exported):
    """camera low + radar, LiDAR off: the branches' graphs, zeros for the LiDAR, then the shared graph equal the
    eager detector's outputs and decoded boxes."""
    manifest, out, model = exported
    detector = model.detector
    W, H = manifest["image_size"]
    batch = frame((H, W), seed=4)
    config = SensorConfig("low", "off", "on")
    cam, radar = batch.camera, batch.radar
    with torch.no_grad():
        camera = load(out, "camera_low")(cam.images, cam.intrinsics, cam.ego_T_cam, cam.valid.bool())
        budget = detector.radar.max_points
        radar_bev = load(out, "radar_on")(pack_points(radar.points, radar.batch_index, 1, budget, budget))
        lidar = torch.zeros(1, detector.lidar.out_channels, *camera.shape[-2:])
        used = torch.tensor([[True, False, True]])
        got = load(out, "shared")(camera, lidar, radar_bev, used)
        eager = detector(batch, config.decisions(batch.present))
    for f in fields(eager):
        if getattr(eager, f.name) is not None:
            torch.testing.assert_close(got[f.name], getattr(eager, f.name), **TOL)
    decoded = detector.head.decode(type(eager)(**got))[0]
    expected = detector.head.decode(eager)[0]
    torch.testing.assert_close(decoded.boxes, expected.boxes, **TOL)


def test_missing_and_bad_checkpoints_are_clear_errors(tmp_path):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(ValueError, match=f"checkpoint {missing}: no such file"):
        main(["--ckpt", str(missing), "--out", str(tmp_path / "out")])
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {bad}: cannot be read as a torch checkpoint"):
        main(["--ckpt", str(bad), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_pack_points_lays_out_frames_and_refuses_overflow():
    points = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    index = torch.tensor([1, 0, 1, 1, 0, 1])
    packed = pack_points(points, index, 2, 4)
    assert torch.equal(packed[0, :2], points[[1, 4]]) and torch.equal(packed[1], points[[0, 2, 3, 5]])
    assert packed[0, 2:].isnan().all()
    with pytest.raises(ValueError, match="a frame has 4 points, the graph takes at most 3"):
        pack_points(points, index, 2, 3)


@pytest.mark.slow
def test_lidar_graph_with_the_motion_map(tmp_path):
    """With lidar_motion, the LiDAR graph's second input carries all the frame's points for the motion map."""
    torch.manual_seed(0)
    detector = build_detector(**TINY, lidar_motion=True).eval()
    lidar = frame((32, 56)).lidar
    budget = detector.lidar.modes["fine"].max_points
    inputs = {"points": pack_points(lidar.points, lidar.batch_index, 1, budget, budget),
              "sweeps": pack_points(lidar.points, lidar.batch_index, 1, 6000)}
    program = export_graph(LidarGraph(detector, "fine"), inputs, tmp_path / "lidar.pt2", data_dependent=True)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*inputs.values()), detector.lidar(lidar, 1, "fine"), **TOL)
