"""Tests of the fusion detector, head, cost table and module on hand-made random batches (the encoders alone:
tests/test_encoders.py)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from fusion.cost import SHARED, branch_gflops, config_cost
from fusion.detector import SensorConfig, build_detector
from fusion.head import REG_DIMS, CenterHead, DetectorOutput
from fusion.module import GateFusionModule, random_decisions
from sensors.bev import BEVGrid
from sensors.frame import Batch, Boxes, CameraData, FrameMeta, LidarData, RadarData
from sensors.names import CAMERA_MODES, CLASSES, LIDAR_MODES, RADAR_MODES, SENSORS

TINY = dict(bev_range=25.6, bev_cell=1.6, camera_width=4, camera_channels=8, camera_heights=2, camera_bev_factor=2,
            lidar_channels=8, lidar_coarse_points=4096, lidar_fine_points=8192, radar_channels=8, radar_points=512,
            fusion_channels=8, bev_channels=8, head_channels=8)
ALL_CONFIGS = [SensorConfig(c, l, r) for c, l, r in itertools.product(CAMERA_MODES, LIDAR_MODES, RADAR_MODES)]


def camera_rig(B: int, H: int, W: int, gen: torch.Generator | None = None) -> CameraData:
    """Six cameras at the ego origin looking outwards every 60 degrees (x right, y down, z forward)."""
    f = W / 2
    K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    ego_T_cam = []
    for i in range(6):
        yaw = math.radians(60 * i)
        fwd = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
        right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
        down = torch.tensor([0.0, 0.0, -1.0])
        T = torch.eye(4)
        T[:3, :3] = torch.stack([right, down, fwd], 1)
        T[:3, 3] = torch.tensor([0.0, 0.0, 1.5])
        ego_T_cam.append(T)
    return CameraData(torch.rand(B, 6, 3, H, W, generator=gen), K.expand(B, 6, 3, 3).clone(),
                      torch.stack(ego_T_cam).expand(B, 6, 4, 4).clone(), torch.ones(B, 6, dtype=torch.bool))


def random_boxes(k: int, extent: float, gen: torch.Generator) -> Boxes:
    """k boxes on distinct, well separated positions within +-extent."""
    cells = torch.randperm(int((2 * extent / 6) ** 2), generator=gen)[:k]
    n = int(2 * extent / 6)
    xy = torch.stack([cells % n, cells // n], 1).float() * 6 - extent + 3 + torch.rand(k, 2, generator=gen)
    size = torch.rand(k, 3, generator=gen) * torch.tensor([3.0, 1.5, 1.5]) + torch.tensor([1.0, 0.6, 0.8])
    z = torch.rand(k, 1, generator=gen) * 0.5 + 0.5
    yaw = torch.rand(k, 1, generator=gen) * 2 * math.pi - math.pi
    vel = torch.randn(k, 2, generator=gen)
    labels = torch.randint(0, 10, (k,), generator=gen)
    attrs = torch.tensor([{0: 0, 1: 1, 2: 2, 3: 0, 4: 1, 6: 6, 7: 7, 8: 3}.get(int(c), -1) for c in labels],
                         dtype=torch.long)
    return Boxes(torch.cat([xy, z, size, yaw, vel], 1), labels, attrs)


def points_in(boxes: Boxes, n: int, dims: int, gen: torch.Generator) -> torch.Tensor:
    """(len(boxes) * n, dims) points uniformly inside each box (extra columns random)."""
    if len(boxes.boxes) == 0:
        return torch.zeros(0, dims)
    b = boxes.boxes.repeat_interleave(n, 0)
    local = (torch.rand(len(b), 3, generator=gen) - 0.5) * b[:, 3:6]
    c, s = torch.cos(b[:, 6]), torch.sin(b[:, 6])
    xyz = torch.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], 1) + b[:, :3]
    return torch.cat([xyz, torch.rand(len(b), dims - 3, generator=gen)], 1)


def make_batch(B: int = 2, k: int = 4, extent: float = 20.0, hw=(32, 56), seed: int = 0,
               empty: tuple[int, ...] = ()) -> Batch:
    """A random Batch: boxes with lidar (40 each) and radar (3 each) points inside; frames in `empty` have
    no boxes and no points."""
    gen = torch.Generator().manual_seed(seed)
    gts = [Boxes.empty() if b in empty else random_boxes(k, extent, gen) for b in range(B)]
    lidar = [points_in(g, 40, 5, gen) for g in gts]
    radar = [points_in(g, 3, 7, gen) for g in gts]
    idx = lambda parts: torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
    return Batch(camera_rig(B, *hw, gen=gen), LidarData(torch.cat(lidar), idx(lidar)), RadarData(torch.cat(radar), idx(radar)),
                 gts, torch.ones(B, 3, dtype=torch.bool),
                 [FrameMeta(f"token{b}", "scene", 0) for b in range(B)])


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return build_detector(**TINY)


def test_bev_grid():
    g = BEVGrid(cell=0.8)
    assert (g.H, g.W) == (128, 128)
    xy = torch.tensor([[0.1, -51.0], [51.19, 51.19]])
    assert torch.allclose(g.to_metric(g.to_cell(xy)), xy, atol=1e-5)
    col, row, inside = g.cell_index(torch.tensor([[-51.2, -51.2], [0.0, 0.0], [60.0, 0.0]]))
    assert col.tolist()[:2] == [0, 64] and inside.tolist() == [True, True, False]
    assert g.sample_points(3).shape == (3, 128, 128, 3)
    with pytest.raises(ValueError, match="whole number"):
        BEVGrid(cell=0.7)


def test_output_shapes_no_nan(detector):
    batch = make_batch()
    out = detector(batch, SensorConfig().decisions(batch.present))
    H = W = detector.grid.H
    assert out.heatmap.shape == (2, 10, H, W)
    assert out.regression.shape == (2, 10, H, W)
    assert out.attribute.shape == (2, 8, H, W)
    assert out.direction.shape == (2, 1, H, W)
    assert all(torch.isfinite(v).all() for v in (out.heatmap, out.regression, out.attribute, out.direction))
    # training mode: the camera's losses as named fields; eval mode: none of them
    assert out.camera_depth_loss.ndim == 0 and out.camera_semantic_loss.ndim == 0 and out.camera_heatmap is None
    detector.eval()
    plain = detector(batch, SensorConfig().decisions(batch.present))
    detector.train()
    assert plain.camera_depth_loss is None and plain.camera_semantic_loss is None and plain.doppler is None
    losses = detector.head.loss(out, batch.gt)
    assert all(torch.isfinite(v) for v in losses.values())


def _grad_state(module: torch.nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("config", ["camera=low,radar=on", "lidar=fine", "camera=high,lidar=coarse",
                                    "camera=low,lidar=fine,radar=on"])
def test_gradients_reach_selected_only(config):
    torch.manual_seed(0)
    det = build_detector(**TINY)
    batch = make_batch()
    cfg = SensorConfig.parse(config)
    det.head.loss(det(batch, cfg.decisions(batch.present)), batch.gt)["loss"].backward()
    assert _grad_state(det.camera) == (cfg.camera != "off")
    assert _grad_state(det.radar) == (cfg.radar == "on")
    for mode, net in det.lidar.modes.items():
        assert _grad_state(net) == (cfg.lidar == mode), (config, mode)
    assert _grad_state(det.decoder) and _grad_state(det.head)


def test_camera_heatmap_trains_the_camera_alone():
    """The training-only camera heatmap covers exactly the frames that ran the camera; its loss reaches the camera
    branch and nothing else; in eval mode it is not computed."""
    torch.manual_seed(0)
    det = build_detector(**TINY, camera_heatmap=True)
    batch = make_batch(B=3)
    decisions = torch.tensor([[2, 2, 1], [0, 1, 1], [1, 0, 0]])
    out = det(batch, decisions)
    assert out.camera_frames.tolist() == [0, 2]
    assert out.camera_heatmap.shape == (2, 10, *out.heatmap.shape[2:])
    losses = det.head.loss(out, batch.gt)
    assert torch.isfinite(losses["camera_heatmap"])
    losses["camera_heatmap"].backward()
    assert _grad_state(det.camera) and _grad_state(det.camera_heatmap)
    assert not any(_grad_state(m) for m in (det.lidar, det.radar, det.fusion, det.decoder, det.head))
    det.eval()
    assert det(batch, decisions).camera_heatmap is None
    m = GateFusionModule(**TINY, camera_heatmap_weight=0.5)
    m.train()
    out = m(batch, decisions)
    parts = m.detector.head.loss(out, batch.gt)
    expected = (parts["loss"] + m.hparams.camera_depth_weight * out.camera_depth_loss
                + m.hparams.camera_semantic_weight * out.camera_semantic_loss + 0.5 * parts["camera_heatmap"])
    assert float(m._step(batch, decisions, "train")) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="camera_heatmap_weight"):
        GateFusionModule(**TINY, camera_heatmap_weight=-1.0)


def test_every_subset_and_resolution_runs(detector):
    batch = make_batch()
    for cfg in ALL_CONFIGS:
        out = detector(batch, cfg.decisions(batch.present))
        assert torch.isfinite(out.heatmap).all(), cfg


def test_mixed_per_frame_decisions_equal_single_runs(detector):
    """One batch with a different configuration per frame gives each frame what it gets alone (eval mode;
    GroupNorm makes every frame independent of its sub-batch)."""
    batch = make_batch(B=4, seed=3)
    batch.present[3, 0] = False
    decisions = torch.tensor([[1, 0, 1], [2, 1, 0], [0, 2, 1], [2, 2, 1]])
    detector.eval()
    with torch.no_grad():
        mixed = detector(batch, decisions).heatmap
        for b in range(4):
            one = make_batch(B=4, seed=3)
            one.present[3, 0] = False
            row = decisions[b].expand(4, 3).clone()
            alone = detector(one, row).heatmap[b]
            assert torch.allclose(mixed[b], alone, atol=1e-5), b
        # the frame without a camera ran camera-off
        cam_off = detector(batch, torch.tensor([[1, 0, 1], [2, 1, 0], [0, 2, 1], [0, 2, 1]])).heatmap[3]
        assert torch.allclose(mixed[3], cam_off, atol=1e-5)
    detector.train()


def test_unselected_branch_not_computed(detector, monkeypatch):
    calls = []
    for s in SENSORS:
        enc = getattr(detector, s)
        orig = enc.forward
        monkeypatch.setattr(enc, "forward", lambda *a, _s=s, _o=orig, **k: (calls.append(_s), _o(*a, **k))[1])
    batch = make_batch()
    detector(batch, SensorConfig.parse("lidar=coarse").decisions(batch.present))
    assert calls == ["lidar"]


def test_empty_frame_gives_finite_loss(detector):
    batch = make_batch(B=2, empty=(0, 1))
    assert len(batch.lidar.points) == 0 and len(batch.radar.points) == 0
    out = detector(batch, SensorConfig().decisions(batch.present))
    losses = detector.head.loss(out, batch.gt)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    mixed = make_batch(B=2, empty=(1,))
    assert torch.isfinite(detector.head.loss(detector(mixed, SensorConfig().decisions(mixed.present)), mixed.gt)["loss"])
    # nothing present at all still runs
    mixed.present[:] = False
    out = detector(mixed, SensorConfig().decisions(mixed.present))
    assert torch.isfinite(detector.head.loss(out, mixed.gt)["loss"])


def test_sensor_config_parse():
    assert SensorConfig.parse("camera=high,lidar=fine,radar=on") == SensorConfig()
    assert SensorConfig.parse(" lidar = coarse ") == SensorConfig("off", "coarse", "off")
    cfg = SensorConfig.parse("camera=low,radar=on")
    assert SensorConfig.parse(str(cfg)) == cfg and cfg.indices() == (1, 0, 1)
    assert SensorConfig.from_indices(cfg.indices()) == cfg
    present = torch.tensor([[True, True, True], [False, True, True]])
    assert cfg.decisions(present).tolist() == [[1, 0, 1], [0, 0, 1]]
    for bad, msg in [("camera=ultra", "unknown camera mode"), ("sonar=on", "unknown sensor"),
                     ("camera", "not sensor=mode"), ("camera=low,camera=high", "given twice"), ("", "empty"),
                     ("lidar=on", "unknown lidar mode")]:
        with pytest.raises(ValueError, match=msg):
            SensorConfig.parse(bad)
    with pytest.raises(ValueError, match="unknown radar mode"):
        SensorConfig(radar="high")


def test_head_target_decode_round_trip(detector):
    head = detector.head
    gen = torch.Generator().manual_seed(1)
    gt = [random_boxes(6, 20.0, gen), Boxes.empty()]
    t = head.targets(gt)
    assert t["mask"].sum() == 6
    logit = lambda p: torch.log(p.clamp(1e-6, 1 - 1e-6)) - torch.log1p(-p.clamp(1e-6, 1 - 1e-6))
    attr = torch.nn.functional.one_hot(t["attribute"].clamp(min=0), 8).permute(0, 3, 1, 2).float() * 10
    outputs = DetectorOutput(logit(t["heatmap"]), t["regression"], attr, (t["direction"][:, None] * 2 - 1) * 10)
    dets = head.decode(outputs, score_threshold=0.5)
    assert len(dets[1].scores) == 0 and len(dets[0].scores) == 6
    order_p = torch.argsort(dets[0].boxes[:, 0])
    order_g = torch.argsort(gt[0].boxes[:, 0])
    pb, gb = dets[0].boxes[order_p], gt[0].boxes[order_g]
    assert torch.allclose(pb[:, :6], gb[:, :6], atol=1e-4)
    assert torch.allclose(torch.remainder(pb[:, 6] - gb[:, 6] + math.pi, 2 * math.pi) - math.pi,
                          torch.zeros(6), atol=1e-4)
    assert torch.allclose(pb[:, 7:], gb[:, 7:], atol=1e-4)
    assert torch.equal(dets[0].labels[order_p], gt[0].labels[order_g])
    assert torch.equal(dets[0].attributes[order_p], gt[0].attributes[order_g])
    # at most max_detections per frame even with a flat heatmap
    flat = DetectorOutput(*(torch.zeros_like(v) for v in (outputs.heatmap, outputs.regression, outputs.attribute,
                                                          outputs.direction)))
    assert len(head.decode(flat, score_threshold=0.0, max_detections=500)[0].scores) <= 500


def test_head_direction_and_velocity_targets_by_hand(detector):
    """The targets at a box's centre cell, against values worked out by hand (not through decode, which would
    share a mistake with them): a car at (4.4, -2.0) m facing backwards-left (yaw 2.5 rad, cos < 0: direction 0)
    moving along its heading at 5 m/s, and one facing forwards-right (yaw -0.4, direction 1) standing still.
    The velocity targets are the boxes' own (vx, vy) in the ego frame, unscaled; the axis is (sin 2yaw, cos 2yaw)."""
    head, g = detector.head, detector.head.grid
    car = CLASSES.index("car")
    boxes = torch.tensor([[4.4, -2.0, 0.8, 4.5, 1.9, 1.6, 2.5, 5 * math.cos(2.5), 5 * math.sin(2.5)],
                          [-10.0, 8.0, 0.8, 4.5, 1.9, 1.6, -0.4, 0.0, 0.0]])
    t = head.targets([Boxes(boxes, torch.tensor([car, car]), torch.tensor([0, 2]))])
    assert int(t["mask"].sum()) == 2
    for (x, y, _, _, _, _, yaw, vx, vy), forward in zip(boxes.tolist(), (0.0, 1.0)):
        col, row = int((x - g.x_range[0]) // g.cell), int((y - g.y_range[0]) // g.cell)
        assert bool(t["mask"][0, row, col]) and float(t["direction"][0, row, col]) == forward
        reg = dict(zip(REG_DIMS, t["regression"][0, :, row, col].tolist()))
        assert reg["vx"] == pytest.approx(vx, abs=1e-5) and reg["vy"] == pytest.approx(vy, abs=1e-5)
        assert reg["sin2"] == pytest.approx(math.sin(2 * yaw), abs=1e-5)
        assert reg["cos2"] == pytest.approx(math.cos(2 * yaw), abs=1e-5)
        assert float(t["heatmap"][0, car, row, col]) == 1.0
    # a box turned by pi keeps its axis targets and flips its direction target
    turned = boxes.clone()
    turned[:, 6] += math.pi
    t2 = head.targets([Boxes(turned, torch.tensor([car, car]), torch.tensor([0, 2]))])
    m = t["mask"]
    axis = lambda targets: targets["regression"][:, 6:8].permute(0, 2, 3, 1)[m]  # noqa: E731
    assert torch.allclose(axis(t2), axis(t), atol=1e-5)
    assert torch.equal(t2["direction"][m], 1 - t["direction"][m])


@pytest.fixture
def one_thread():
    """Run a test in one intra-op thread: these small convolutions gain nothing from two, and on a loaded 2-core
    machine two OpenMP threads cost up to 30x (measured 1.5 s against 0.05 s per step of the tiny detector)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def overfit(det, batch: Batch, sensors: str, steps: int, lr: float) -> tuple[float, float, list]:
    """Train `det` on `batch` alone for `steps` AdamW steps; (first loss, last loss, decoded detections >= 0.3)."""
    decisions = SensorConfig.parse(sensors).decisions(batch.present)
    opt = torch.optim.AdamW(det.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = det.head.loss(det(batch, decisions), batch.gt)["loss"]
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    det.eval()
    with torch.no_grad():
        return losses[0], losses[-1], det.head.decode(det(batch, decisions), score_threshold=0.3)


def matched(dets, gt: list[Boxes]):
    """Per frame: (detections, the ground-truth box nearest each detection, its distance)."""
    for d, g in zip(dets, gt):
        assert len(d.scores) == len(g.labels)
        dist = torch.cdist(d.boxes[:, :2], g.boxes[:, :2])
        yield d, g.boxes[dist.argmin(1)], g.labels[dist.argmin(1)], dist.min(1).values


def test_overfit_one_batch_fast(one_thread):
    """The tiny detector (32x32 grid) memorises one LiDAR-only batch in 200 steps: every box found, at its place,
    with its class (sizes: the slow test)."""
    torch.manual_seed(0)
    det = build_detector(**{**TINY, "bev_channels": 16, "head_channels": 16, "fusion_channels": 16,
                            "lidar_channels": 16})
    batch = make_batch(B=2, k=3, extent=18.0, seed=5)
    first, last, dets = overfit(det, batch, "lidar=coarse", 200, 1e-2)
    assert last < 0.05 * first, (first, last)
    for d, _, labels, dist in matched(dets, batch.gt):
        assert (dist < 0.5).all() and torch.equal(d.labels, labels)


@pytest.mark.slow
def test_overfit_one_batch(one_thread):
    """LiDAR + radar on a 64x64 grid memorise one batch: every box found at its place with its class and size.
    The head has 32 channels: with 16, only 1-3 hidden regression channels stayed active (ReLU) at the box
    centres, too few to fit 10 numbers for 6 boxes, and whether the last box's size converged by step 450
    depended on the seed and on float rounding (it failed with two threads, 23% off on one height)."""
    torch.manual_seed(0)
    det = build_detector(**{**TINY, "bev_cell": 0.8, "bev_channels": 16, "head_channels": 32, "fusion_channels": 16,
                            "lidar_channels": 16})
    batch = make_batch(B=2, k=3, extent=18.0, seed=5)
    first, last, dets = overfit(det, batch, "lidar=coarse,radar=on", 450, 5e-3)
    assert last < 0.1 * first, (first, last)
    for d, boxes, labels, dist in matched(dets, batch.gt):
        assert (dist < 0.5).all() and torch.equal(d.labels, labels)
        assert torch.allclose(d.boxes[:, 3:6], boxes[:, 3:6], rtol=0.2)


def test_velocity_is_learned_when_most_boxes_stand_still():
    """A quarter of the boxes move at 6 m/s, the rest stand still: the head memorises their velocities from
    distinct features. (Under plain L1 the still majority held every prediction at 0, the median.)"""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6, (-2.0, 4.0))
    head = CenterHead(grid, 8, 8)
    gt = []
    for _ in range(2):
        b = random_boxes(8, 24.0, gen)
        b.boxes[:, 7:9] = 0.0
        b.boxes[:2, 7] = 6.0
        gt.append(b)
    features = torch.nn.Parameter(torch.randn(2, 8, grid.H, grid.W, generator=gen))
    opt = torch.optim.Adam([features, *head.parameters()], lr=1e-2)
    for _ in range(150):
        loss = head.loss(head(features), gt)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    t = head.targets(gt)
    vel = head(features).regression.detach().permute(0, 2, 3, 1)[t["mask"]][:, 8:10]
    target = t["regression"].permute(0, 2, 3, 1)[t["mask"]][:, 8:10]
    moving = target[:, 0] > 0
    assert (vel[moving] - target[moving]).norm(dim=1).mean() < 1.5, vel[moving]
    assert (vel[~moving] - target[~moving]).norm(dim=1).mean() < 1.5


def test_cost_table_monotonic(detector):
    batch = make_batch(B=1)
    table = branch_gflops(detector, batch)
    for s in SENSORS:
        assert table[(s, "off")] == 0.0
    assert table[("camera", "high")] > table[("camera", "low")] > 0
    assert table[("lidar", "fine")] > table[("lidar", "coarse")] > 0
    assert table[("radar", "on")] > 0 and table[SHARED] > 0
    assert config_cost(table, SensorConfig()) > config_cost(table, SensorConfig("low", "coarse", "on"))


def test_module_detect_and_random_decisions():
    torch.manual_seed(0)
    m = GateFusionModule(sensors="camera=low,lidar=fine,radar=on", **TINY)
    batch = make_batch(B=3)
    batch.present[1, 1] = False
    dets, records = m.detect(batch)
    assert len(dets) == 3 and len(records) == 3 and m.training
    assert [r.lidar for r in records] == ["fine", "off", "fine"]
    assert records[0].sample_token == "token0" and records[0].cost > records[1].cost > 0
    for d in dets:
        assert d.boxes.shape[1] == 9 and len(d.scores) <= 500
        assert ((d.attributes == -1) == torch.isin(d.labels, torch.tensor([5, 9]))).all()
    _, recs = m.detect(batch, SensorConfig.parse("radar=on"))
    assert all((r.camera, r.lidar, r.radar) == ("off", "off", "on") for r in recs)
    present = torch.tensor([[1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool).repeat(25, 1)
    static = SensorConfig().decisions(present)
    dec = random_decisions(present, static, 1.0, torch.Generator().manual_seed(0))
    assert ((dec > 0) <= present).all()
    assert (dec[present.any(1)] > 0).any(1).all()
    assert not torch.equal(dec, static)
    assert torch.equal(random_decisions(present, static, 0.0), static)
    # Uniform over the 7 non-empty subsets of three present sensors: each sensor alone as often as all three.
    full = torch.ones(1400, 3, dtype=torch.bool)
    dec = random_decisions(full, SensorConfig().decisions(full), 1.0, torch.Generator().manual_seed(1))
    subsets = torch.bincount(((dec > 0).long() * torch.tensor([1, 2, 4])).sum(1), minlength=8)
    assert subsets[0] == 0 and ((subsets[1:] - 200).abs() < 60).all(), subsets.tolist()
    with pytest.raises(ValueError, match="every sensor off"):
        GateFusionModule(sensors="camera=off")



def test_radial_velocity_is_resolved_along_the_heading():
    # a radar sees an object moving at 10 m/s along +x from 30 degrees off its axis: radial = 10 cos30 along u
    u = torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    radial = 10 * math.cos(math.pi / 6) * u
    doppler = torch.zeros(1, 3, 2, 2)
    doppler[0, :2, 0, 0] = radial / 10.0
    doppler[0, 2, 0, 0] = math.log(2) / 5  # one return
    doppler[0, :2, 0, 1] = torch.tensor([0.0, 0.9])  # 9 m/s radial, 90 degrees off the axis: kept as regressed
    doppler[0, 2, 0, 1] = math.log(2) / 5
    doppler[0, :2, 1, 0] = torch.tensor([0.02, 0.0])  # 0.2 m/s: too slow to resolve
    doppler[0, 2, 1, 0] = math.log(2) / 5
    # cell (1, 1): no returns
    pix = torch.tensor([[0, 0, 1, 2, 3]])
    yaw = torch.tensor([[0.0, math.pi, 0.0, 0.0, 0.0]])  # the second reads the same cell with the heading flipped
    regressed = torch.full((1, 5, 2), 7.0)
    v = CenterHead.radial_velocity(doppler, pix, yaw, regressed)
    assert torch.allclose(v[0, 0], torch.tensor([10.0, 0.0]), atol=1e-4)
    assert torch.allclose(v[0, 1], torch.tensor([10.0, 0.0]), atol=1e-4)  # the sign comes from the measurement
    assert torch.equal(v[0, 2:], regressed[0, 2:])
    # decode uses it where the detector was built with doppler_velocity: the detector hands the head the radar's
    # Doppler map, the channels of the head's input past the decoder's; it needs the Doppler map
    with pytest.raises(ValueError, match="doppler_velocity needs radar_doppler"):
        build_detector(doppler_velocity=True)
    kw = TINY | dict(radar_doppler=True, lidar_motion=True)
    torch.manual_seed(0)
    plain = build_detector(**kw).eval()
    torch.manual_seed(0)
    resolved = build_detector(**kw, doppler_velocity=True).eval()
    points = torch.zeros(3, 7)
    points[:, 0], points[:, 1], points[:, 4] = torch.tensor([10.0, 10.5, 11.0]), 0.3, 6.0
    feats = {"radar": plain.radar(RadarData(points, torch.zeros(3, dtype=torch.long)), 1)}
    used = torch.tensor([[False, False, True]])
    a, b = plain.shared(feats, used), resolved.shared(feats, used)
    assert a.doppler is None and torch.equal(b.doppler, plain.fused_bev(feats, used)[:, -3:])
    assert resolved.shared({}, used).doppler is None  # no frame ran the radar: the regressed velocity
    col, row, _ = plain.grid.cell_index(torch.tensor([[10.5, 0.3]]))
    r, c = int(row), int(col)
    a.heatmap[0, 0, r, c] = b.heatmap[0, 0, r, c] = 10.0  # a car on the returns' cell
    a.direction[0, 0, r, c] = b.direction[0, 0, r, c] = 5.0  # heading the axis' forward end
    a.regression[0, 6:8, r, c] = b.regression[0, 6:8, r, c] = torch.tensor([0.0, 1.0])  # axis along x
    da, db = plain.head.decode(a)[0], resolved.head.decode(b)[0]
    assert not torch.allclose(da.boxes[0, 7:9], torch.tensor([6.0, 0.0]), atol=0.5)
    assert torch.allclose(db.boxes[0, 7:9], torch.tensor([6.0, 0.0]), atol=1e-3)
    assert torch.equal(da.boxes[:, :7], db.boxes[:, :7])
    # eval.py --doppler-velocity switches it on a detector built without it
    plain.set_doppler_velocity(True)
    assert plain.doppler_velocity and torch.equal(plain.shared(feats, used).doppler, b.doppler)
    plain.set_doppler_velocity(False)
    assert plain.shared(feats, used).doppler is None
    with pytest.raises(ValueError, match="doppler_velocity needs radar_doppler"):
        build_detector().set_doppler_velocity(True)


def test_radar_doppler_map_carries_the_measured_velocity_to_the_head():
    from sensors.radar import DOPPLER_CHANNELS, DOPPLER_WINDOW, RadarEncoder

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6, (-2.0, 4.0))
    # frame 0: three returns near (10, 0) moving at (6, 0) and (4, 0) m/s; frame 1: none
    points = torch.zeros(3, 7)
    points[:, 0], points[:, 1] = torch.tensor([10.0, 10.5, 11.0]), 0.3
    points[:, 4] = torch.tensor([6.0, 4.0, 5.0])
    enc = RadarEncoder(grid, 8, 512, doppler=True)
    out = enc(RadarData(points, torch.zeros(3, dtype=torch.long)), 2)
    assert out.shape == (2, 8 + DOPPLER_CHANNELS, grid.H, grid.W) and enc.out_channels == 11
    col, row, _ = grid.cell_index(torch.tensor([[10.5, 0.3]]))
    vx, vy, n = out[0, 8:, int(row), int(col)].detach()
    assert float(vx) == pytest.approx(0.5) and float(vy) == 0.0 and float(n) == pytest.approx(math.log(4) / 5)
    # the window spreads it DOPPLER_WINDOW // 2 cells to each side, no further; the empty frame stays zero
    assert float(out[0, 8, int(row), int(col) + DOPPLER_WINDOW // 2 + 2]) == 0.0
    assert float(out[0, 8, int(row) + DOPPLER_WINDOW // 2, int(col)]) == pytest.approx(0.5)
    assert out[1, 8:].abs().sum() == 0
    # the detector hands it to the head past fusion and decoder, zeros for frames without radar
    det = build_detector(bev_range=25.6, bev_cell=1.6, camera_width=4, camera_channels=8, camera_heights=2,
                         camera_bev_factor=1, lidar_channels=8, radar_channels=8, fusion_channels=8, bev_channels=8,
                         head_channels=8, radar_doppler=True).eval()
    used = torch.tensor([[False, False, True]])
    feats = det.radar(RadarData(points, torch.zeros(3, dtype=torch.long)), 1)
    faster = points.clone()
    faster[:, 4] += 3.0
    feats2 = det.radar(RadarData(faster, torch.zeros(3, dtype=torch.long)), 1)
    a, b = det.fused_bev({"radar": feats}, used), det.fused_bev({"radar": feats2}, used)
    assert a.shape[1] == 8 + DOPPLER_CHANNELS and not torch.equal(a[:, 8:], b[:, 8:])
    assert det.fused_bev({}, torch.zeros(1, 3, dtype=torch.bool))[:, 8:].abs().sum() == 0
    assert det.shared({"radar": feats}, used).heatmap.shape[1:] == (len(CLASSES), *a.shape[2:])
