"""Camera encoder: a small image CNN of our own run at a selectable input scale, and the lift of its features onto
a BEV grid by bilinear sampling (simple_bev style), followed by the mode's own BEV stage.

Modes (CAMERA_RESOLUTIONS): "high" runs the CNN on the images as given and lifts onto a grid `bev_factor` times
coarser than the shared one; "low" runs it on images downsampled 2x (the ray geometry too is computed at that
size: the whole preprocessing runs at the mode's resolution) and lifts onto a grid twice as coarse again. The
image CNN is shared by the modes; each mode has its own BEV stage (sensors/bev.py BEVStage), upsampled to the
shared grid, so low costs about a quarter of high. The CNN sees RGB plus each pixel's ray geometry
(ray_geometry: the depth at which the ray meets the ground, its elevation).
Lifting: the 3D centres of the mode's BEV cells at a few heights are mapped into every camera with
cam_T_ego = inverse(ego_T_cam) and the intrinsics, the feature map is sampled there (normalised image coordinates,
so the intrinsics apply to any feature-map size), and the samples are averaged over the cameras where the point
lies in front of the camera, inside the image and the camera is valid. The heights stay apart as channels (as in
simple_bev): where along a ray an object stands shows only in which heights see it, so averaging them would throw
the depth cue away; the BEV stage's first conv reduces (C x heights) to C.

Depth: the image CNN also predicts, per feature-map cell, a distribution over `depth_bins` depth bins (depth =
distance along the optical axis, bins of equal width over DEPTH_RANGE). Each 3D sample is weighted by the
probability of its own depth at its pixel (a trilinear grid_sample of the depth volume), so a feature lands at
the depths the camera believes in instead of along the whole ray: lift-splat's depth distribution, in
simple_bev's sampling form. Training supervises the depth with the LiDAR points projected into the images
(BEVDepth's idea) through `depth_loss`; without LiDAR the depth learns from the detection loss alone.

Semantics: the CNN also predicts, per feature-map cell, which class covers it (background + the ten CLASSES).
Training supervises it with the ground-truth boxes projected into the images (`semantic_loss`: the nearest box
whose projected outline covers the cell), a dense 2D signal of what is where that reaches the image CNN directly
instead of only through the lift and the BEV head (the perspective supervision of BEVFormer v2, in its simplest
form). It is a training signal only; the lifted features are the first `channels`.

Backbones (CAMERA_BACKBONES): "small", the CNN of our own above (ImageBackbone, the default), or torchvision's
ResNet-18 / ResNet-50 (TorchvisionBackbone), the ImageNet-pretrained start of real camera detectors, truncated after
layer2 at the same stride 8 and projected to the same channels by a 1x1 conv. torchvision is imported only when a
ResNet is chosen: its PyPI wheels are built against PyPI's CUDA torch, and a CPU-only torch needs torchvision's CPU
wheel of the matching release.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from sensors.bev import BEVGrid, BEVStage, conv_block
from sensors.frame import Boxes, CameraData, unit_images
from sensors.geometry import box_corners
from sensors.names import CLASSES

CAMERA_RESOLUTIONS = {"low": 0.5, "high": 1.0}  # image scale per mode; the lift grid is coarser by the same factor
MIN_DEPTH = 0.2
DEPTH_RANGE = (1.0, 65.0)  # metres along the optical axis covered by the depth bins


SEMANTIC_CLASSES = 1 + len(CLASSES)  # per image cell: background or the class covering it (semantic_loss)
GEOMETRY_CHANNELS = 2  # per-pixel ray geometry fed to the image CNN next to RGB, see ray_geometry
GROUND_DEPTH_SCALE = 10.0  # metres: the ground channel is 10 / depth, 1 at 10 m


class ImageBackbone(nn.Module):
    """(N, in_channels, H, W), normalised -> (N, out_channels, ~H/8, ~W/8). Five 3x3 conv blocks, three of
    stride 2."""

    def __init__(self, width: int = 16, out_channels: int = 32, in_channels: int = 3 + GEOMETRY_CHANNELS):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            conv_block(in_channels, w, 2),
            conv_block(w, 2 * w, 2),
            conv_block(2 * w, 2 * w),
            conv_block(2 * w, 4 * w, 2),
            conv_block(4 * w, 4 * w),
            nn.Conv2d(4 * w, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


CAMERA_BACKBONES = ("small", "resnet18", "resnet50")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYER2_CHANNELS = {"resnet18": 128, "resnet50": 512}  # a ResNet's channels after layer2 (stride 8)


def import_torchvision():
    """torchvision, or an ImportError saying why it cannot serve: not installed, or built for another torch (its
    PyPI wheels need PyPI's CUDA torch; a CPU-only torch needs the CPU wheel of the matching release)."""
    try:
        import torchvision
    except Exception as e:  # a mismatched build raises RuntimeError ("operator torchvision::nms does not exist")
        raise ImportError(f"the ResNet camera backbones need torchvision built for this torch ({torch.__version__}): "
                          f"{type(e).__name__}: {e}") from e
    return torchvision


class TorchvisionBackbone(nn.Module):
    """torchvision's ResNet-18 or ResNet-50 as the image CNN: (N, 3 + GEOMETRY_CHANNELS, H, W), RGB normalised as
    CameraEncoder does -> (N, out_channels, ~H/8, ~W/8), the stride of ImageBackbone, which the depth and semantic
    targets' cells assume (the lift itself samples normalised coordinates and takes any stride).

    The ResNet stops after layer2 (stride 8; 128 channels for ResNet-18, 512 for ResNet-50) and a 1x1 conv projects
    to out_channels. conv1 takes the ray geometry as two more input channels, initialised to zero so that a
    pretrained network starts as pretrained; the RGB is renormalised to ImageNet's statistics. Batch norms are
    frozen (torchvision.ops.FrozenBatchNorm2d, as torchvision's detection models fine-tune): the branches run on
    sub-batches of the frames that chose them, and frozen statistics do not depend on which.

    weights: None (random, as the tests run it), "torchvision" (torchvision's ImageNet file in its cache,
    torch.hub.get_dir()/checkpoints; never downloaded here) or the path of a saved state dict of the full ResNet."""

    def __init__(self, name: str, out_channels: int, weights: str | None = None,
                 in_channels: int = 3 + GEOMETRY_CHANNELS):
        super().__init__()
        path = Path(weights) if weights not in (None, "torchvision") else None
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"camera backbone {name}: weights file {str(path)!r} does not exist")
        tv = import_torchvision()
        from torchvision.ops.misc import FrozenBatchNorm2d

        builder = {"resnet18": tv.models.resnet18, "resnet50": tv.models.resnet50}[name]
        resnet = builder(weights=None, norm_layer=FrozenBatchNorm2d)
        if weights == "torchvision":
            url = tv.models.get_model_weights(name).IMAGENET1K_V1.url
            path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
            if not path.is_file():
                raise FileNotFoundError(f"camera backbone {name}: torchvision's ImageNet weights are not in its cache "
                                        f"({str(path)!r}); place the file {url} there, or give its path")
        if path is not None:
            resnet.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        with torch.no_grad():
            conv1.weight.zero_()
            conv1.weight[:, :3] = resnet.conv1.weight
        self.body = nn.Sequential(conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2)
        self.proj = nn.Conv2d(LAYER2_CHANNELS[name], out_channels, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        rgb = (x[:, :3] * 0.25 + 0.45 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return self.proj(self.body(torch.cat([rgb, x[:, 3:]], 1)))


def image_backbone(name: str, width: int, out_channels: int, weights: str | None = None) -> nn.Module:
    """The camera's image CNN by CAMERA_BACKBONES name: "small" (ImageBackbone of `width`; no weights) or a ResNet
    (TorchvisionBackbone; width unused)."""
    if name not in CAMERA_BACKBONES:
        raise ValueError(f"camera backbone: unknown {name!r}; expected one of {CAMERA_BACKBONES}")
    if name == "small":
        if weights is not None:
            raise ValueError(f"camera backbone 'small' has no pretrained weights, got {weights!r}")
        return ImageBackbone(width, out_channels)
    return TorchvisionBackbone(name, out_channels, weights)


def view_rows(data: CameraData, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(ego_T_cam (1, R, 4, 4), intrinsics (1, R, 3, 3)) of the (B * N) views of `data`, frame-major, as one frame of
    R views: those at `rows` (R,) long, or all of them."""
    ego_T_cam = rearrange(data.ego_T_cam, "b n i j -> 1 (b n) i j")
    intrinsics = rearrange(data.intrinsics, "b n i j -> 1 (b n) i j")
    return (ego_T_cam, intrinsics) if rows is None else (ego_T_cam[:, rows], intrinsics[:, rows])


def ray_geometry(ego_T_cam: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """(B, N, 4, 4), (B, N, 3, 3) for images of size image_hw -> (B, N, GEOMETRY_CHANNELS, H, W): per pixel, the
    depth along the optical axis at which its ray meets the ground (ego z = 0) as GROUND_DEPTH_SCALE / depth (0 for
    rays at or above the horizon), and the up component of its unit ray in the ego frame.

    A translation-invariant CNN cannot know where a pixel lies relative to the horizon; with these channels the
    depth of an object standing on the road is the ground depth at its lowest pixel, the strongest monocular depth
    cue (the camera-aware depth of BEVDepth in its simplest form)."""
    H, W = image_hw
    dev = intrinsics.device
    v, u = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32) + 0.5,
                          torch.arange(W, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    pix = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)  # (HW, 3)
    rays = torch.einsum("bnij,pj->bnpi", torch.linalg.inv(intrinsics.float()), pix)  # camera frame, z = 1
    up = torch.einsum("bnj,bnpj->bnp", ego_T_cam[..., 2, :3].float(), rays)  # ego z per unit optical depth
    height = ego_T_cam[..., 2, 3].float()[..., None]  # camera height above the ground
    ground = torch.where(up < 0, -up / height.clamp(min=0.1), torch.zeros_like(up)) * GROUND_DEPTH_SCALE
    unit_up = up / (rays * rays).sum(-1).sqrt()  # not rays.norm(-1): 20x slower on this einsum's memory layout
    return rearrange(torch.stack([ground, unit_up], 2), "b n c (h w) -> b n c h w", h=H)


def project_to_images(points: Tensor, ego_T_cam: Tensor, intrinsics: Tensor, image_hw: tuple[int, int],
                      with_depth: bool = False):
    """Ego-frame points into every camera.

    points (P, 3); ego_T_cam (B, N, 4, 4); intrinsics (B, N, 3, 3) for an image of size image_hw = (H, W).
    Returns normalised image coordinates (B, N, P, 2) in [-1, 1] (grid_sample, align_corners=False) and
    visible (B, N, P) bool: in front of the camera and inside the image; with_depth: also the depth (B, N, P)
    along the optical axis. Always float32, also under mixed precision (autocast): a half-precision pixel
    coordinate is off by several pixels at the image's far edge.
    """
    with torch.autocast(points.device.type, enabled=False):
        points, ego_T_cam, intrinsics = points.float(), ego_T_cam.float(), intrinsics.float()
        cam_T_ego = torch.linalg.inv(ego_T_cam)  # not the rigid shortcut: augmentation scales and flips ego_T_cam
        p_cam = torch.einsum("bnij,pj->bnpi", cam_T_ego[..., :3, :3], points) + cam_T_ego[..., None, :3, 3]
        uvw = torch.einsum("bnij,bnpj->bnpi", intrinsics, p_cam)
    depth = uvw[..., 2]
    uv = uvw[..., :2] / depth.clamp(min=MIN_DEPTH)[..., None]
    H, W = image_hw
    norm = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)
    visible = (depth > MIN_DEPTH) & (norm.abs() <= 1).all(-1)
    return (norm, visible, depth) if with_depth else (norm, visible)


class CameraEncoder(nn.Module):
    """CameraData -> (B, channels, H, W) on the shared grid, at mode "low" or "high". backbone, backbone_weights:
    the image CNN (image_backbone)."""

    def __init__(self, grid: BEVGrid, width: int = 16, channels: int = 32, heights: int = 4, bev_factor: int = 2,
                 depth_bins: int = 32, blocks: int = 2, backbone: str = "small",
                 backbone_weights: str | None = None):
        super().__init__()
        if depth_bins < 2:
            raise ValueError(f"CameraEncoder: depth_bins must be at least 2, got {depth_bins}")
        self.grid = grid
        self.heights = heights
        self.channels = self.out_channels = channels  # no measurement maps (fusion/detector.py fused_bev)
        self.depth_bins = depth_bins
        self.backbone = image_backbone(backbone, width, channels + depth_bins + SEMANTIC_CLASSES, backbone_weights)
        self.bev_grids = {mode: grid.scaled(bev_factor / scale) for mode, scale in CAMERA_RESOLUTIONS.items()}
        self.stages = nn.ModuleDict({mode: BEVStage(channels * heights, channels, blocks, g, grid)
                                     for mode, g in self.bev_grids.items()})
        for mode, g in {**self.bev_grids, "shared": grid}.items():
            self.register_buffer(f"points_{mode}", rearrange(g.sample_points(heights), "z h w c -> (z h w) c"),
                                 persistent=False)

    def coverage(self, data: CameraData, views: Tensor | None = None) -> Tensor:
        """(B, 1, H, W) bool on the shared grid: the cells whose centre, at any of the lift's heights, lies in the
        image of a valid camera among `views` (B, N) bool (default: all)."""
        valid = data.valid.bool() if views is None else data.valid.bool() & views.bool()
        _, visible = project_to_images(self.points_shared, data.ego_T_cam, data.intrinsics,
                                       tuple(data.images.shape[-2:]))
        seen = (visible & valid[:, :, None]).any(1)
        return rearrange(seen, "b (z h w) -> b z h w", z=self.heights, h=self.grid.H).any(1, keepdim=True)

    def image_features(self, data: CameraData, mode: str, rows: Tensor | None = None) -> Tensor:
        """Images (B, N, 3, H, W) -> (B * N, C + depth_bins + SEMANTIC_CLASSES, h, w) at the mode's input scale:
        features, depth logits, semantic logits; with `rows` (R,) long, only those of the (B * N) views (frame-major)
        enter the CNN: (R, ...). The CNN sees RGB and the ray geometry of every pixel (ray_geometry), both at the
        mode's resolution."""
        if mode not in CAMERA_RESOLUTIONS:
            raise ValueError(f"CameraEncoder: unknown mode {mode!r}; expected one of {tuple(CAMERA_RESOLUTIONS)}")
        x = rearrange(data.images, "b n c h w -> (b n) c h w")
        ego_T_cam, intrinsics = view_rows(data, rows)
        intrinsics = intrinsics.float()
        x = unit_images(x if rows is None else x[rows])  # uint8 when not moved by .to
        scale = CAMERA_RESOLUTIONS[mode]
        if scale != 1.0:  # a k x k box filter: the anti-aliased downsample, at a tenth of bilinear-aa's time
            k = int(round(1 / scale))
            h, w = x.shape[-2:]
            if h % k == 0 and w % k == 0:  # as a sum of strided slices: 3x faster than avg_pool2d on the CPU
                x = sum(x[..., i::k, j::k] for i in range(k) for j in range(k)) / (k * k)
            else:
                x = F.avg_pool2d(x, k, ceil_mode=True, count_include_pad=False)
            intrinsics = intrinsics * intrinsics.new_tensor([scale, scale, 1.0])[:, None]
        geometry = ray_geometry(ego_T_cam, intrinsics, tuple(x.shape[-2:]))[0].to(x.dtype)
        return self.backbone(torch.cat([(x - 0.45) / 0.25, geometry], 1))

    def depth_coordinate(self, depth: Tensor) -> Tensor:
        """Metric depth -> grid_sample's normalised coordinate over the depth bins (align_corners=False)."""
        lo, hi = DEPTH_RANGE
        return (depth - lo) / (hi - lo) * 2 - 1

    def forward(self, data: CameraData, mode: str = "high", lidar_points: Tensor | None = None,
                lidar_index: Tensor | None = None, boxes: list[Boxes] | None = None, views: Tensor | None = None
                ) -> tuple[Tensor, dict]:
        """-> (BEV (B, C, H, W), training losses). The losses (scalars) are "depth" when LiDAR points (P, >=3) of
        the same frames with their frame index (P,) are given (see depth_loss) and "semantic" when the frames'
        ground-truth boxes are given (see semantic_loss). `views` (B, N) bool: the views that run; a view left out
        never enters the image CNN nor the lift (its features are zeros, and it counts as not valid). Default: all
        the valid ones (a dead view, `valid` False, never enters the CNN; under torch.export every view does)."""
        images = data.images
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"CameraEncoder: images must be (B, N_cam, 3, H, W), got {tuple(images.shape)}")
        B, N = images.shape[:2]
        if views is None and not torch.compiler.is_compiling():
            # a dead view (valid False) is left out as a view the decisions leave out (its weight in the lift is 0
            # anyway); an exported graph (fusion/export.py) has no data-dependent branch and runs every view
            n_valid = int(data.valid.sum())
            if 0 < n_valid < B * N:
                views = data.valid.bool()
        rows = None
        if views is not None:
            if views.shape != (B, N):
                raise ValueError(f"CameraEncoder: views must be ({B}, {N}), got {tuple(views.shape)}")
            data = replace(data, valid=data.valid.bool() & views.bool())
            rows = torch.nonzero(views.flatten()).flatten()
        out = self.image_features(data, mode, rows)  # (R, C + D + S, h, w): the views that run
        c, d = self.channels, self.depth_bins
        hw = tuple(images.shape[-2:])
        bev_grid = self.bev_grids[mode]
        points = getattr(self, f"points_{mode}")
        norm, visible, depth = project_to_images(points, *view_rows(data, rows), hw, with_depth=True)  # views run
        grid = rearrange(norm, "1 r p t -> r 1 p t").to(out.dtype)
        sampled = F.grid_sample(out[:, :c], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        prob = out[:, None, c:c + d].float().softmax(2)
        depth = rearrange(self.depth_coordinate(depth), "1 r p -> r 1 p 1")
        p_depth = F.grid_sample(prob, torch.cat([grid, depth], -1)[:, None], mode="bilinear", padding_mode="zeros",
                                align_corners=False).flatten(1)
        weight = visible[0] & rearrange(data.valid.bool(), "b n -> (b n) 1")[rows if rows is not None else slice(None)]
        if rows is not None:  # zeros for the views that did not run (their weight is 0 too)
            sampled = sampled.new_zeros(B * N, *sampled.shape[1:]).index_copy(0, rows, sampled)
            p_depth = p_depth.new_zeros(B * N, *p_depth.shape[1:]).index_copy(0, rows, p_depth)
            weight = weight.new_zeros(B * N, weight.shape[1]).index_copy(0, rows, weight)
        weight = weight.to(out.dtype)
        sampled = rearrange(sampled, "(b n) c 1 (z h w) -> b n c z h w", b=B, z=self.heights, h=bev_grid.H)
        weight = rearrange(weight, "(b n) (z h w) -> b n 1 z h w", b=B, z=self.heights, h=bev_grid.H)
        # the depth probability (x depth_bins: 1 for a flat distribution) and the visibility weight, combined on
        # the small tensor without channels, then one product with the features
        p_depth = rearrange(p_depth, "(b n) (z h w) -> b n 1 z h w", b=B, z=self.heights, h=bev_grid.H)
        bev = (sampled * (weight * p_depth.to(weight.dtype) * self.depth_bins)).sum(1) / weight.sum(1).clamp(min=1.0)
        bev = self.stages[mode](rearrange(bev, "b c z h w -> b (c z) h w"))
        losses = {}
        if (lidar_points is not None and lidar_index is not None) or boxes is not None:
            if rows is not None:
                out = out.new_zeros(B * N, *out.shape[1:]).index_copy(0, rows, out)
            out = rearrange(out, "(b n) c h w -> b n c h w", b=B)
            if lidar_points is not None and lidar_index is not None:
                losses["depth"] = self.depth_loss(out[:, :, c:c + d], data, lidar_points, lidar_index)
            if boxes is not None:
                losses["semantic"] = self.semantic_loss(out[:, :, c + d:], data, boxes)
        return bev, losses

    def depth_loss(self, depth_logits: Tensor, data: CameraData, points: Tensor, index: Tensor) -> Tensor:
        """Cross-entropy of the depth logits (B, N, D, h, w) against the depth of the nearest LiDAR point in each
        feature-map cell of each valid camera (cells without a point in DEPTH_RANGE are ignored); 0 with a
        gradient when no cell has a point."""
        D, h, w = depth_logits.shape[2:]
        lo, hi = DEPTH_RANGE
        nearest = lidar_depth(data, points, index, (h, w)).flatten()
        logits = rearrange(depth_logits.float(), "b n d h w -> (b n h w) d")
        has = torch.isfinite(nearest)
        if not bool(has.any()):
            return logits.sum() * 0.0
        target = ((nearest[has] - lo) / (hi - lo) * D).long().clamp(0, D - 1)
        return F.cross_entropy(logits[has], target)

    def semantic_loss(self, logits: Tensor, data: CameraData, boxes: list[Boxes]) -> Tensor:
        """Cross-entropy of the semantic logits (B, N, SEMANTIC_CLASSES, h, w) against semantic_targets, averaged
        over the covered cells and over the background cells separately and then over the two (most cells are
        background); valid cameras only."""
        target = semantic_targets(boxes, data, tuple(data.images.shape[-2:]), tuple(logits.shape[-2:]))
        valid = data.valid.bool()[:, :, None, None].expand_as(target)
        ce = F.cross_entropy(rearrange(logits.float(), "b n k h w -> (b n h w) k"), target.flatten(),
                             reduction="none")
        valid = valid.flatten()
        parts = [ce[valid & sel].mean() for sel in (target.flatten() > 0, target.flatten() == 0)
                 if bool((valid & sel).any())]
        return torch.stack(parts).mean() if parts else logits.sum() * 0.0


def lidar_depth(data: CameraData, points: Tensor, index: Tensor, cells_hw: tuple[int, int]) -> Tensor:
    """(B, N, h, w): per cell of an (h, w) feature map of every valid camera, the depth (along the optical axis) of
    the nearest of the frame's LiDAR points (P, >=3) with frame index (P,) that project into it, within DEPTH_RANGE;
    inf where none does."""
    B, N = data.images.shape[:2]
    h, w = cells_hw
    H, W = data.images.shape[-2:]
    lo, hi = DEPTH_RANGE
    nearest = torch.full((B * N * h * w,), float("inf"), device=data.images.device)
    for f in range(B):  # each frame's points into its own cameras only
        norm, visible, depth = project_to_images(points[index.long() == f, :3], data.ego_T_cam[f:f + 1],
                                                 data.intrinsics[f:f + 1], (H, W), with_depth=True)
        ok = visible[0] & data.valid[f, :, None].bool() & (depth[0] > lo) & (depth[0] < hi)  # (N, P)
        n, p = torch.nonzero(ok, as_tuple=True)
        u = ((norm[0, n, p, 0] + 1) / 2 * w).long().clamp(0, w - 1)
        v = ((norm[0, n, p, 1] + 1) / 2 * h).long().clamp(0, h - 1)
        nearest.scatter_reduce_(0, ((f * N + n) * h + v) * w + u, depth[0, n, p], "amin")
    return nearest.view(B, N, h, w)


def semantic_targets(boxes: list[Boxes], data: CameraData, image_hw: tuple[int, int], cells_hw: tuple[int, int]
                     ) -> Tensor:
    """(B, N, h, w) long: per cell of an (h, w) feature map of every camera, 1 + the class of the nearest box
    (distance from the camera to its centre) whose projected outline (the 2D bounding rectangle of its corners)
    covers the cell centre, 0 where none does. Boxes with a corner behind the camera are left out."""
    B, N = data.images.shape[:2]
    h, w = cells_hw
    dev = data.images.device
    target = torch.zeros(B, N, h, w, dtype=torch.long, device=dev)
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * 2 - 1
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * 2 - 1
    for b, frame_boxes in enumerate(boxes):
        if len(frame_boxes.boxes) == 0:
            continue
        K = len(frame_boxes.boxes)
        corners = torch.as_tensor(box_corners(frame_boxes.boxes[:, :7].detach().cpu().numpy()), dtype=torch.float32,
                                  device=dev).reshape(-1, 3)  # (K * 8, 3)
        norm, _, depth = project_to_images(corners, data.ego_T_cam[b:b + 1], data.intrinsics[b:b + 1], image_hw,
                                           with_depth=True)
        norm, depth = norm[0].reshape(N, K, 8, 2), depth[0].reshape(N, K, 8)
        lo, hi = norm.amin(2), norm.amax(2)  # (N, K, 2)
        ok = (depth > MIN_DEPTH).all(2)  # (N, K)
        inside = (ok[:, :, None, None]
                  & (u >= lo[..., 0, None, None]) & (u <= hi[..., 0, None, None])
                  & (v[:, None] >= lo[..., 1, None, None]) & (v[:, None] <= hi[..., 1, None, None]))  # (N, K, h, w)
        dist = depth.mean(2)[:, :, None, None].expand_as(inside).masked_fill(~inside, float("inf"))
        nearest, k = dist.min(1)  # (N, h, w)
        label = frame_boxes.labels.to(dev).long()[k] + 1
        target[b] = torch.where(torch.isfinite(nearest), label, torch.zeros_like(label))
    return target
