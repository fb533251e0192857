"""Tests of the sensor encoders on hand-made inputs: camera projection, ray geometry, lift, depth and semantic
targets; LiDAR pillars split by time and the motion map; the radar's context level."""
from __future__ import annotations

import math

import pytest
import torch

from fusion.detector import build_detector
from sensors.bev import BEVGrid
from sensors.frame import Boxes, LidarData, RadarData
from sensors.names import CLASSES
from tests.test_model import TINY, camera_rig

def test_camera_projection_geometry():
    from datasets.augment import augment_matrix
    from sensors.camera import project_to_images

    cam = camera_rig(1, 32, 56)
    pts = torch.tensor([[10.0, 0.0, 1.5], [-10.0, 0.0, 1.5], [10.0, 0.0, 5.0]])
    norm, visible = project_to_images(pts, cam.ego_T_cam, cam.intrinsics, (32, 56))
    assert visible[0, 0].tolist() == [True, False, True]  # camera 0 looks along +x
    assert torch.allclose(norm[0, 0, 0], torch.zeros(2), atol=1e-5)  # straight ahead -> image centre
    assert norm[0, 0, 2, 1] < 0  # higher -> up in the image
    assert visible[0, 3, 1] and not visible[0, 3, 0]  # camera 3 looks backwards
    # augmentation (rotation, scale, flip) applied to points and extrinsics alike leaves the projection unchanged
    A = torch.as_tensor(augment_matrix(0.3, 1.05, True), dtype=torch.float32)
    norm_aug, visible_aug = project_to_images(pts @ A[:3, :3].T + A[:3, 3], A @ cam.ego_T_cam, cam.intrinsics,
                                              (32, 56))
    assert torch.equal(visible_aug, visible) and torch.allclose(norm_aug, norm, atol=1e-4)


def test_ray_geometry_gives_the_ground_depth_of_every_pixel():
    """Below the horizon every pixel carries the depth at which its ray meets the ground (level cameras 1.5 m up:
    1.5 f / (row - H/2)), and the pixel where a ground point 12 m ahead projects about 12 m; rows above the horizon
    carry 0; the up component of the rays grows from the bottom row to the top."""
    from sensors.camera import GROUND_DEPTH_SCALE, project_to_images, ray_geometry

    H, W = 64, 112
    cam = camera_rig(1, H, W)
    g = ray_geometry(cam.ego_T_cam, cam.intrinsics, (H, W))
    assert g.shape == (1, 6, 2, H, W)
    rows = torch.arange(H // 2 + 1, H).float() + 0.5
    expected = 1.5 * (W / 2) / (rows - H / 2)
    assert torch.allclose(GROUND_DEPTH_SCALE / g[0, :, 0, H // 2 + 1:, :], expected[None, :, None], rtol=1e-4)
    norm, visible = project_to_images(torch.tensor([[12.0, 0.0, 0.0]]), cam.ego_T_cam, cam.intrinsics, (H, W))
    assert visible[0, 0, 0]
    u, v = int((norm[0, 0, 0, 0] + 1) / 2 * W), int((norm[0, 0, 0, 1] + 1) / 2 * H)
    assert GROUND_DEPTH_SCALE / float(g[0, 0, 0, v, u]) == pytest.approx(12.0, rel=0.15)
    assert (g[0, :, 0, : H // 2] == 0).all() and (g[0, :, 0, H // 2 + 1:] > 0).all()
    assert (g[0, :, 1, 0] > g[0, :, 1, -1]).all()


def test_camera_bev_responds_where_cameras_see():
    """Only BEV cells seen by a valid camera get camera features (before the BEV stage)."""
    from sensors.camera import CameraEncoder

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6)
    enc = CameraEncoder(grid, width=4, channels=8, heights=2, bev_factor=1)
    data = camera_rig(1, 32, 56)
    data.valid[0, 1:] = False
    enc.stages["low"] = torch.nn.Identity()
    with torch.no_grad():
        bev = enc(data, "low")[0][0].abs().sum(0)
    xy = enc.bev_grids["low"].cell_centers()
    ahead = (xy[..., 0] > 3) & (xy[..., 1].abs() < 0.3 * xy[..., 0])
    behind = xy[..., 0] < -1
    assert (bev[ahead] > 0).all() and (bev[behind] == 0).all()


def test_camera_depth_loss_is_supervised_by_lidar_points():
    """A LiDAR point 10 m ahead of camera 0 is the depth target of the cell it projects to: logits that put the
    mass on its bin give a low loss, others a high one; without points the loss is 0 and still differentiable."""
    from sensors.camera import DEPTH_RANGE, CameraEncoder, project_to_images

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6)
    enc = CameraEncoder(grid, width=4, channels=8, heights=2, bev_factor=1, depth_bins=16)
    data = camera_rig(1, 32, 56)
    point = torch.tensor([[10.0, 0.0, 0.0]])
    norm, visible, depth = project_to_images(point, data.ego_T_cam, data.intrinsics, (32, 56), with_depth=True)
    assert visible[0, 0, 0] and abs(float(depth[0, 0, 0]) - 10.0) < 1e-4
    h, w = 4, 7
    u = int((norm[0, 0, 0, 0] + 1) / 2 * w)
    v = int((norm[0, 0, 0, 1] + 1) / 2 * h)
    target = int((10.0 - DEPTH_RANGE[0]) / (DEPTH_RANGE[1] - DEPTH_RANGE[0]) * 16)
    good = torch.zeros(1, 6, 16, h, w)
    good[0, 0, target, v, u] = 20.0
    bad = torch.zeros(1, 6, 16, h, w)
    bad[0, 0, (target + 5) % 16, v, u] = 20.0
    index = torch.zeros(1, dtype=torch.long)
    assert float(enc.depth_loss(good, data, point, index)) < 1e-3
    assert float(enc.depth_loss(bad, data, point, index)) > 10.0
    logits = torch.zeros(1, 6, 16, h, w, requires_grad=True)
    empty = enc.depth_loss(logits, data, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    empty.backward()
    assert float(empty) == 0.0 and logits.grad is not None
    bev, losses = enc(data, "high", point, index)
    assert bev.shape == (1, 8, grid.H, grid.W) and set(losses) == {"depth"} and torch.isfinite(losses["depth"])


def test_camera_semantic_targets_mark_the_cells_a_box_covers():
    """A car 10 m ahead of camera 0 covers the centre cells of that camera's feature map and no cell of the
    camera looking back; a nearer pedestrian in front of it wins the cells they share; the loss is low for
    logits that match the targets, high for others, and finite for a frame without boxes."""
    from sensors.camera import SEMANTIC_CLASSES, CameraEncoder, semantic_targets

    data = camera_rig(1, 32, 56)
    car = [10.0, 0.0, 1.0, 4.0, 5.0, 2.0, 0.0, 0.0, 0.0]
    ped = [6.0, 0.0, 0.9, 1.0, 1.0, 1.8, 0.0, 0.0, 0.0]
    boxes = Boxes(torch.tensor([car, ped]), torch.tensor([CLASSES.index("car"), CLASSES.index("pedestrian")]),
                  torch.tensor([-1, -1]))
    t = semantic_targets([boxes], data, (32, 56), (8, 14))
    assert t.shape == (1, 6, 8, 14)
    front = t[0, 0]
    assert int(front[4, 7]) == 1 + CLASSES.index("pedestrian")  # the nearer one, in front of the car
    assert (front == 1 + CLASSES.index("car")).any() and (front == 0).any()
    assert (t[0, 3] == 0).all()  # camera 3 looks back
    enc = CameraEncoder(BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6), width=4, channels=8, heights=2, bev_factor=1)
    good = torch.nn.functional.one_hot(t, SEMANTIC_CLASSES).permute(0, 1, 4, 2, 3).float() * 20.0
    assert float(enc.semantic_loss(good, data, [boxes])) < 1e-3
    assert float(enc.semantic_loss(good.roll(1, dims=2), data, [boxes])) > 10.0
    empty = enc.semantic_loss(good, data, [Boxes.empty()])
    assert torch.isfinite(empty)


def test_lidar_time_split_keeps_the_key_sweep_and_the_earlier_sweeps_in_separate_channels():
    from sensors.lidar import PillarNet

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6, (-2.0, 4.0))
    net = PillarNet(grid, 0.8, 4096, channels=8, blocks=1, time_split=True)
    canvases = []
    net.bev.register_forward_hook(lambda module, inputs, output: canvases.append(inputs[0]))
    points = torch.rand(500, 5) * 20 - 10
    for lag in (0.0, 0.1):
        points[:, 4] = lag
        net(points, torch.zeros(500, dtype=torch.long), 1)
    now, past = canvases
    assert now.shape[1] == 8 and now[:, :4].abs().sum() > 0 and now[:, 4:].abs().sum() == 0
    assert past[:, :4].abs().sum() == 0 and past[:, 4:].abs().sum() > 0
    with pytest.raises(ValueError, match="even number of channels"):
        PillarNet(grid, 0.8, 4096, channels=7, time_split=True)


def test_radar_context_runs_a_half_resolution_level_and_keeps_the_shared_grid():
    from sensors.radar import RadarEncoder

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 1.6, (-2.0, 4.0))
    points = torch.rand(300, 7) * 20 - 10
    data = RadarData(points, torch.zeros(300, dtype=torch.long))
    plain, context = RadarEncoder(grid, 8, 512), RadarEncoder(grid, 8, 512, context=True)
    seen = []
    context.bev.down.register_forward_hook(lambda module, inputs, output: seen.append(output.shape))
    assert plain(data, 1).shape == context(data, 1).shape == (1, 8, grid.H, grid.W)
    assert seen == [(1, 16, grid.H // 2, grid.W // 2)]


def test_lidar_motion_map_measures_the_sweep_to_sweep_displacement_above_the_ground():
    from sensors.lidar import MOTION_CHANNELS, LidarEncoder

    grid = BEVGrid((-25.6, 25.6), (-25.6, 25.6), 0.8, (-2.0, 4.0))
    gen = torch.Generator().manual_seed(0)

    def cluster(x, y, lag, n=20):  # points 1 m above the ground in a 0.4 m square at (x, y)
        p = torch.zeros(n, 5)
        p[:, :2] = torch.tensor([x, y]) + torch.rand(n, 2, generator=gen) * 0.4
        p[:, 2], p[:, 4] = 1.0, lag
        return p

    # frame 0: a car at (12, 0) that was 1 m behind 0.2 s earlier (5 m/s along x), a still object at (-10, 5) seen
    # identically in both sweeps, and ground points everywhere in both sweeps; frame 1: ground only
    still = cluster(-10.0, 5.0, 0.0)
    earlier = still.clone()
    earlier[:, 4] = 0.2
    ground = torch.zeros(4000, 5)
    ground[:, :2] = torch.rand(4000, 2, generator=gen) * 40 - 20
    ground[:, 4] = (torch.arange(4000) % 2) * 0.2
    frame0 = torch.cat([cluster(12.0, 0.0, 0.0), cluster(11.0, 0.0, 0.2), still, earlier, ground])
    points = torch.cat([frame0, ground])
    batch_index = torch.cat([torch.zeros(len(frame0)), torch.ones(len(ground))]).long()
    enc = LidarEncoder(grid, 8, 1024, 4096, 1, motion=True)
    out = enc(LidarData(points, batch_index), 2, "coarse")
    assert out.shape == (2, 8 + MOTION_CHANNELS, grid.H, grid.W) and enc.out_channels == 8 + MOTION_CHANNELS
    motion = out[:, 8:].detach()

    def at(b, x, y):
        col, row, _ = grid.cell_index(torch.tensor([[x, y]]))
        return motion[b, :, int(row), int(col)]

    vx, vy, n = at(0, 11.8, 0.2)
    assert float(vx) * 10 == pytest.approx(5.0, abs=0.6) and abs(float(vy)) * 10 < 0.6
    assert float(n) == pytest.approx(math.log(21) / 5)
    assert at(0, -9.8, 5.2)[:2].abs().max() * 10 < 0.6  # still
    assert motion[1].abs().max() == 0  # the ground alone: nothing above it, no motion
    assert at(0, 0.0, -15.0).abs().max() == 0
    # the detector hands it to the head past fusion and decoder
    det = build_detector(**(TINY | dict(bev_cell=0.8, lidar_motion=True))).eval()
    bev = det.fused_bev({"lidar": det.lidar(LidarData(points, batch_index), 2)},
                        torch.tensor([[False, True, False]] * 2))
    assert bev.shape[1] == 8 + MOTION_CHANNELS and torch.allclose(bev[:, 8:], out[:, 8:])
