"""The BEV fusion detector: per-sensor encoders (run only where chosen), mask-aware fusion, BEV backbone, head.

Per-frame decisions are a (B, 3) long tensor over SENSORS holding a mode index into sensors.names.MODES
(0 = "off"). A branch runs only on the sub-batch of frames that chose that mode; a mode chosen by
no frame is not computed at all. `SensorConfig` is one static choice ("camera=high,lidar=fine,radar=on").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fusion.head import CenterHead
from sensors.bev import BEVGrid, conv_block, norm2d
from sensors.camera import CameraEncoder
from sensors.frame import Batch, CameraData, LidarData, RadarData
from sensors.lidar import LidarEncoder
from sensors.names import CLASSES, MODES, SENSORS
from sensors.radar import RadarEncoder


@dataclass(frozen=True)
class SensorConfig:
    """One static choice of mode per sensor. `parse("camera=low,lidar=fine")`: sensors left out are "off"."""

    camera: str = "high"
    lidar: str = "fine"
    radar: str = "on"

    def __post_init__(self):
        for s in SENSORS:
            if getattr(self, s) not in MODES[s]:
                raise ValueError(f"SensorConfig: unknown {s} mode {getattr(self, s)!r}; expected one of {MODES[s]}")

    @staticmethod
    def parse(text: str) -> "SensorConfig":
        """"camera=high,lidar=fine,radar=on" -> SensorConfig; ValueError naming the bad part."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"SensorConfig.parse: empty sensor configuration {text!r}; "
                             f"expected e.g. 'camera=high,lidar=fine,radar=on'")
        values: dict[str, str] = {}
        for item in text.split(","):
            key, eq, value = (p.strip() for p in item.partition("="))
            if not eq or not key or not value:
                raise ValueError(f"SensorConfig.parse: {item.strip()!r} in {text!r} is not sensor=mode")
            if key not in MODES:
                raise ValueError(f"SensorConfig.parse: unknown sensor {key!r} in {text!r}; expected one of {SENSORS}")
            if key in values:
                raise ValueError(f"SensorConfig.parse: sensor {key!r} given twice in {text!r}")
            if value not in MODES[key]:
                raise ValueError(f"SensorConfig.parse: unknown {key} mode {value!r} in {text!r}; "
                                 f"expected one of {MODES[key]}")
            values[key] = value
        return SensorConfig(**{s: values.get(s, "off") for s in SENSORS})

    @staticmethod
    def from_indices(indices) -> "SensorConfig":
        """(3,) mode indices (a decisions row) -> SensorConfig."""
        return SensorConfig(*(MODES[s][int(i)] for s, i in zip(SENSORS, indices)))

    def indices(self) -> tuple[int, int, int]:
        return tuple(MODES[s].index(getattr(self, s)) for s in SENSORS)

    def decisions(self, present: Tensor) -> Tensor:
        """(B, 3) bool present -> (B, 3) long mode indices; a sensor not present in a frame is "off"."""
        idx = torch.tensor(self.indices(), dtype=torch.long, device=present.device)
        return torch.where(present.bool(), idx, torch.zeros_like(idx))

    def __str__(self) -> str:
        return ",".join(f"{s}={getattr(self, s)}" for s in SENSORS)


@dataclass
class FrameRecord:
    """What ran on one frame and an estimate of what it cost.

    gflops: the chosen modes' entries of the cost table of fusion/cost.py, which is counted once, on the first frame
    the model sees, by torch's FLOP counter (convolutions, linear layers, matmuls; not grid_sample, scatter or norms).
    It is not a count on this frame: the point encoders' cost depends on the frame's number of points.
    """

    sample_token: str
    camera: str
    lidar: str
    radar: str
    gflops: float

def select_camera(data: CameraData, idx: Tensor) -> CameraData:
    return CameraData(data.images[idx], data.intrinsics[idx], data.ego_T_cam[idx], data.valid[idx])


def select_points(points: Tensor, batch_index: Tensor, idx: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Points of the frames `idx` (K,), re-indexed 0..K-1 in that order."""
    remap = torch.full((batch_size,), -1, dtype=torch.long, device=batch_index.device)
    remap[idx] = torch.arange(len(idx), device=batch_index.device)
    new = remap[batch_index.long()]
    keep = new >= 0
    return points[keep], new[keep]


class MaskedFusion(nn.Module):
    """Per-sensor 1x1 projections summed over the sensors each frame used, divided by their number, plus the
    (B, 3) use mask broadcast as 3 channels: any subset of sensors per frame -> (B, channels + 3, H, W)."""

    def __init__(self, in_channels: dict[str, int], channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.ModuleDict({s: nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), norm2d(channels))
                                   for s, c in in_channels.items()})

    def forward(self, features: dict[str, Tensor | None], used: Tensor, hw: tuple[int, int]) -> Tensor:
        """features: sensor -> (B, C_s, H, W) or None (not run for any frame); used (B, 3) bool; hw = (H, W)."""
        B = used.shape[0]
        ref = next(self.parameters())
        fused = ref.new_zeros(B, self.channels, *hw)
        w = used.to(ref.dtype)
        for i, s in enumerate(SENSORS):
            f = features.get(s)
            if f is not None:
                fused = fused + self.proj[s](f) * w[:, i, None, None, None].to(f.dtype)
        fused = fused / w.sum(1).clamp(min=1.0)[:, None, None, None].to(fused.dtype)
        masks = w[:, :, None, None].expand(-1, -1, *hw).to(fused.dtype)
        return torch.cat([fused, masks], 1)


class BEVBackbone(nn.Module):
    """(B, in_channels, H, W) -> (B, channels, H, W): conv blocks, one stride-2 stage, upsample and merge."""

    def __init__(self, in_channels: int, channels: int = 32):
        super().__init__()
        c = channels
        self.stem = nn.Sequential(conv_block(in_channels, c), conv_block(c, c))
        self.down = nn.Sequential(conv_block(c, 2 * c, 2), conv_block(2 * c, 2 * c), conv_block(2 * c, 2 * c))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 2, 2, bias=False), norm2d(c), nn.ReLU(inplace=True))
        self.merge = conv_block(2 * c, c)
        self.channels = c

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = self.up(self.down(x))
        return self.merge(torch.cat([x, y[..., :x.shape[-2], :x.shape[-1]]], 1))


class FusionDetector(nn.Module):
    """Encoders + fusion + backbone + head. forward(batch, decisions) -> head outputs (see fusion/head.py)."""

    def __init__(self, camera: CameraEncoder, lidar: LidarEncoder, radar: RadarEncoder, fusion: MaskedFusion,
                 backbone: BEVBackbone, head: CenterHead, camera_heatmap: nn.Module | None = None):
        super().__init__()
        self.camera, self.lidar, self.radar = camera, lidar, radar
        self.fusion, self.backbone, self.head = fusion, backbone, head
        self.camera_heatmap = camera_heatmap
        self.grid: BEVGrid = head.grid

    def run_encoder(self, sensor: str, batch: Batch, idx: Tensor, mode: str, aux: list[dict] | None = None
                    ) -> Tensor:
        """The `sensor` encoder at `mode` on frames `idx` (K,) of the batch -> (K, C, H, W). With a list `aux`,
        the camera's training losses on these frames are appended to it: its depth supervised by the batch's
        LiDAR points (used whether or not the frame chose LiDAR) and its image semantics supervised by the boxes
        (sensors/camera.py)."""
        B = len(batch)
        if sensor == "camera":
            if aux is None:
                return self.camera(select_camera(batch.camera, idx), mode)[0]
            p, i = select_points(batch.lidar.points, batch.lidar.batch_index, idx, B)
            bev, losses = self.camera(select_camera(batch.camera, idx), mode, p, i,
                                      [batch.gt[j] for j in idx.tolist()])
            aux.append(losses)
            return bev
        if sensor == "lidar":
            p, i = select_points(batch.lidar.points, batch.lidar.batch_index, idx, B)
            return self.lidar(LidarData(p, i), len(idx), mode)
        p, i = select_points(batch.radar.points, batch.radar.batch_index, idx, B)
        return self.radar(RadarData(p, i), len(idx), mode)

    def encode(self, batch: Batch, decisions: Tensor, aux: list[dict] | None = None) -> dict[str, Tensor | None]:
        """sensor -> (B, C_s, H, W) (zeros for frames that did not use it) or None where no frame used it; `aux`
        collects auxiliary losses (see run_encoder)."""
        B = len(batch)
        out: dict[str, Tensor | None] = {}
        for s_i, s in enumerate(SENSORS):
            feat = None
            for m_i, mode in enumerate(MODES[s]):
                if m_i == 0:
                    continue
                idx = torch.nonzero(decisions[:, s_i] == m_i).flatten()
                if len(idx) == 0:
                    continue
                sub = self.run_encoder(s, batch, idx, mode, aux)
                if len(idx) == B:
                    feat = sub
                else:
                    feat = (sub.new_zeros(B, *sub.shape[1:]) if feat is None else feat).index_copy(0, idx, sub)
            out[s] = feat
        return out

    def forward(self, batch: Batch, decisions: Tensor) -> dict[str, Tensor]:
        """decisions (B, 3) long mode indices (a sensor not present is forced off) -> head outputs; in training
        mode, where a camera ran, also "camera_depth_loss" and "camera_semantic_loss" (scalars) and, with a
        camera_heatmap head, "camera_heatmap" (K, 10, H, W) logits of the camera's BEV alone for the K frames
        "camera_frames" (K,)."""
        if decisions.shape != (len(batch), len(SENSORS)):
            raise ValueError(f"FusionDetector: decisions must be ({len(batch)}, 3), got {tuple(decisions.shape)}")
        decisions = torch.where(batch.present.bool(), decisions.long(), torch.zeros_like(decisions.long()))
        aux: list[dict] | None = [] if self.training else None
        features = self.encode(batch, decisions, aux)
        outputs = self.shared(features, decisions > 0)
        for name in ("depth", "semantic") if aux else ():
            outputs[f"camera_{name}_loss"] = torch.stack([a[name] for a in aux]).mean()
        if self.training and self.camera_heatmap is not None and features["camera"] is not None:
            rows = torch.nonzero(decisions[:, SENSORS.index("camera")] > 0).flatten()
            outputs["camera_heatmap"] = self.camera_heatmap(features["camera"][rows])
            outputs["camera_frames"] = rows
        return outputs

    def shared(self, features: dict[str, Tensor | None], used: Tensor) -> dict[str, Tensor]:
        """Fusion + backbone + head on given encoder features (used by fusion/cost.py)."""
        return self.head(self.fused_bev(features, used))

    def fused_bev(self, features: dict[str, Tensor | None], used: Tensor) -> Tensor:
        """Fusion + backbone: the (B, C, H, W) BEV features the head reads."""
        return self.backbone(self.fusion(features, used, (self.grid.H, self.grid.W)))


def build_detector(bev_range: float = 51.2, bev_cell: float = 0.8, z_min: float = -2.0, z_max: float = 4.0,
                   camera_width: int = 16, camera_channels: int = 32, camera_heights: int = 4,
                   camera_bev_factor: int = 2, lidar_channels: int = 32, lidar_coarse_points: int = 16384,
                   lidar_fine_points: int = 65536, radar_channels: int = 16, radar_points: int = 4096,
                   fusion_channels: int = 32, bev_channels: int = 32, head_channels: int = 32,
                   score_threshold: float = 0.05, max_detections: int = 500, heatmap_weight: float = 1.0,
                   regression_weight: float = 0.25, attribute_weight: float = 0.2,
                   camera_depth_bins: int = 32, direction_weight: float = 0.2,
                   camera_heatmap: bool = False) -> FusionDetector:
    """A FusionDetector from plain hyperparameters (square BEV range [-bev_range, bev_range] m). camera_heatmap: a
    training-only class heatmap (one 3x3 conv) on the camera's BEV alone, so that the camera branch learns to
    detect on its own rather than only as a helper of the LiDAR (its loss weight is the module's). This signature
    is the one declaration of the detector's hyperparameters: GateFusionModule passes its **detector on by name."""
    if direction_weight < 0:
        raise ValueError(f"build_detector: direction_weight must be >= 0, got {direction_weight}")
    grid = BEVGrid((-bev_range, bev_range), (-bev_range, bev_range), bev_cell, (z_min, z_max))
    camera = CameraEncoder(grid, camera_width, camera_channels, camera_heights, camera_bev_factor,
                           camera_depth_bins)
    lidar = LidarEncoder(grid, lidar_channels, lidar_coarse_points, lidar_fine_points)
    radar = RadarEncoder(grid, radar_channels, radar_points)
    fusion = MaskedFusion({"camera": camera_channels, "lidar": lidar_channels, "radar": radar_channels},
                          fusion_channels)
    backbone = BEVBackbone(fusion_channels + len(SENSORS), bev_channels)
    head = CenterHead(grid, bev_channels, head_channels, heatmap_weight=heatmap_weight,
                      regression_weight=regression_weight, attribute_weight=attribute_weight,
                      direction_weight=direction_weight, score_threshold=score_threshold, max_detections=max_detections)
    aux_head = None
    if camera_heatmap:
        aux_head = nn.Conv2d(camera_channels, len(CLASSES), 3, padding=1)
        nn.init.constant_(aux_head.bias, -math.log((1 - 0.01) / 0.01))
    return FusionDetector(camera, lidar, radar, fusion, backbone, head, aux_head)
