"""Camera encoder: a small image CNN of our own run at a selectable input scale, and the lift of its features onto
the shared BEV grid by bilinear sampling (simple_bev style).

Modes (CAMERA_RESOLUTIONS): "low" runs the CNN on images downsampled 2x, "high" on the images as given.
Lifting: the 3D centres of the BEV cells (of a grid `bev_factor` times coarser than the shared one) at a few
heights are mapped into every camera with cam_T_ego = inverse(ego_T_cam) and the intrinsics, the feature map is
sampled there (normalised image coordinates, so the intrinsics apply to any feature-map size), and the samples
are averaged over the cameras where the point lies in front of the camera, inside the image and the camera is
valid. The heights stay apart as channels (as in simple_bev): where along a ray an object stands shows only in
which heights see it, so averaging them would throw the depth cue away. A 1x1 conv reduces (C x heights) to C;
the coarse BEV is refined by a conv and upsampled to the shared grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from fusion.bev import BEVGrid, conv_block
from sensors.frame import CameraData

CAMERA_RESOLUTIONS = {"low": 0.5, "high": 1.0}
MIN_DEPTH = 0.2


class ImageBackbone(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, out_channels, ~H/8, ~W/8). Five 3x3 conv blocks, three of stride 2."""

    def __init__(self, width: int = 16, out_channels: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            conv_block(3, w, 2),
            conv_block(w, 2 * w, 2),
            conv_block(2 * w, 2 * w),
            conv_block(2 * w, 4 * w, 2),
            conv_block(4 * w, 4 * w),
            nn.Conv2d(4 * w, out_channels, 1),
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.body((images - 0.45) / 0.25)


def project_to_images(points: Tensor, ego_T_cam: Tensor, intrinsics: Tensor, image_hw: tuple[int, int]
                      ) -> tuple[Tensor, Tensor]:
    """Ego-frame points into every camera.

    points (P, 3); ego_T_cam (B, N, 4, 4); intrinsics (B, N, 3, 3) for an image of size image_hw = (H, W).
    Returns normalised image coordinates (B, N, P, 2) in [-1, 1] (grid_sample, align_corners=False) and
    visible (B, N, P) bool: in front of the camera and inside the image.
    """
    cam_T_ego = torch.linalg.inv(ego_T_cam)  # not the rigid shortcut: augmentation scales and flips ego_T_cam
    p_cam = torch.einsum("bnij,pj->bnpi", cam_T_ego[..., :3, :3], points) + cam_T_ego[..., None, :3, 3]
    uvw = torch.einsum("bnij,bnpj->bnpi", intrinsics, p_cam)
    depth = uvw[..., 2]
    uv = uvw[..., :2] / depth.clamp(min=MIN_DEPTH)[..., None]
    H, W = image_hw
    norm = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)
    visible = (depth > MIN_DEPTH) & (norm.abs() <= 1).all(-1)
    return norm, visible


class CameraEncoder(nn.Module):
    """CameraData -> (B, channels, H, W) on the shared grid, at mode "low" or "high"."""

    def __init__(self, grid: BEVGrid, width: int = 16, channels: int = 32, heights: int = 4, bev_factor: int = 2):
        super().__init__()
        self.grid = grid
        self.bev_grid = grid.scaled(bev_factor)
        self.heights = heights
        self.channels = channels
        self.backbone = ImageBackbone(width, channels)
        self.reduce = nn.Conv2d(channels * heights, channels, 1, bias=False)
        self.refine = conv_block(channels, channels)
        self.register_buffer("points", rearrange(self.bev_grid.sample_points(heights), "z h w c -> (z h w) c"),
                             persistent=False)

    def image_features(self, images: Tensor, mode: str) -> Tensor:
        """(B, N, 3, H, W) -> (B, N, C, h, w) at the mode's input scale."""
        if mode not in CAMERA_RESOLUTIONS:
            raise ValueError(f"CameraEncoder: unknown mode {mode!r}; expected one of {tuple(CAMERA_RESOLUTIONS)}")
        B = images.shape[0]
        x = rearrange(images, "b n c h w -> (b n) c h w")
        if CAMERA_RESOLUTIONS[mode] != 1.0:
            x = F.interpolate(x, scale_factor=CAMERA_RESOLUTIONS[mode], mode="bilinear", align_corners=False,
                              antialias=True)
        return rearrange(self.backbone(x), "(b n) c h w -> b n c h w", b=B)

    def forward(self, data: CameraData, mode: str = "high") -> Tensor:
        images = data.images
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"CameraEncoder: images must be (B, N_cam, 3, H, W), got {tuple(images.shape)}")
        B, N = images.shape[:2]
        feats = self.image_features(images, mode)
        norm, visible = project_to_images(self.points, data.ego_T_cam.float(), data.intrinsics.float(),
                                          tuple(images.shape[-2:]))
        weight = (visible & data.valid[:, :, None].bool()).to(feats.dtype)
        sampled = F.grid_sample(rearrange(feats, "b n c h w -> (b n) c h w"),
                                rearrange(norm, "b n p t -> (b n) 1 p t").to(feats.dtype),
                                mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled = rearrange(sampled, "(b n) c 1 (z h w) -> b n c z h w", b=B, z=self.heights, h=self.bev_grid.H)
        weight = rearrange(weight, "b n (z h w) -> b n 1 z h w", z=self.heights, h=self.bev_grid.H)
        bev = (sampled * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        bev = self.refine(self.reduce(rearrange(bev, "b c z h w -> b (c z) h w")))
        if (self.bev_grid.H, self.bev_grid.W) != (self.grid.H, self.grid.W):
            bev = F.interpolate(bev, size=(self.grid.H, self.grid.W), mode="bilinear", align_corners=False)
        return bev
