"""The BEV fusion detector: per-sensor encoders (run only where chosen), mask-aware fusion, a light BEV decoder, head.

The compute is in the sensor branches, as in deployed camera+LiDAR detectors: each encoder ends in its own BEV stage
at its own grid resolution (sensors/bev.py BEVStage), and what runs after fusion (the decoder and the head) is small,
so choosing sensors and resolutions per frame decides what a frame costs (fusion/cost.py measures it).

Per-frame decisions are a (B, 3) long tensor over SENSORS holding a mode index into sensors.names.MODES
(0 = "off"). A branch runs only on the sub-batch of frames that chose that mode; a mode chosen by
no frame is not computed at all. `SensorConfig` is one static choice ("camera=high,lidar=fine,radar=on").
Below the sensor, `forward` also takes the camera's mode per view (a view turned off never runs) and, for the LiDAR,
the tiles of the BEV grid where it runs fine (coarse elsewhere; composited from the whole fine map for now, the
block-sparse execution is fusion/cost.py's FineCosts model): bench/oracle.py --fine searches these decisions.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fusion.head import CenterHead, DetectorOutput
from sensors.bev import BEVGrid, conv_block, norm2d
from sensors.camera import CameraEncoder
from sensors.frame import Batch, select_points
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


def static_configs() -> list[SensorConfig]:
    """Every static configuration with at least one sensor on, full (every sensor at its top mode) first."""
    combos = itertools.product(*(MODES[s][::-1] for s in SENSORS))
    return [SensorConfig(*c) for c in combos if any(m != "off" for m in c)]


@dataclass
class FrameRecord:
    """What ran on one frame: the modes, its cost as a fraction of full by the model's latency table (fusion/cost.py)
    and, where a gate chose, its probabilities per sensor and mode at the price it chose at (sensor -> one per
    MODES[sensor]).
    Evaluation adds what it measured on the frame: FLOPs counted on its own forward pass and ms."""

    sample_token: str
    camera: str
    lidar: str
    radar: str
    cost: float
    gate_probs: dict[str, list[float]] | None = None


class MaskedFusion(nn.Module):
    """Per-sensor 1x1 projections summed over the sensors each frame used, divided by their number, plus the
    (B, 3) use mask broadcast as 3 channels: any subset of sensors per frame -> (B, channels + 3, H, W).

    `weights` (B, 3), optional, multiply each sensor's projected features per frame: the gate's straight-through
    selection values (1 in the forward pass; their gradient is the soft selection's, fusion/gate.py), through which
    the detection loss of each frame reaches the gate."""

    def __init__(self, in_channels: dict[str, int], channels: int):
        super().__init__()
        self.channels = channels
        self.proj = nn.ModuleDict({s: nn.Sequential(nn.Conv2d(c, channels, 1, bias=False), norm2d(channels))
                                   for s, c in in_channels.items()})

    def forward(self, features: dict[str, Tensor | None], used: Tensor, hw: tuple[int, int],
                weights: Tensor | None = None) -> Tensor:
        """features: sensor -> (B, C_s, H, W) or None (not run for any frame); used (B, 3) bool; hw = (H, W)."""
        B = used.shape[0]
        ref = next(self.parameters())
        fused = ref.new_zeros(B, self.channels, *hw)
        w = used.to(ref.dtype)
        scale = w if weights is None else w * weights.to(ref.dtype)
        for i, s in enumerate(SENSORS):
            f = features.get(s)
            if f is not None:
                fused = fused + self.proj[s](f) * scale[:, i, None, None, None].to(f.dtype)
        fused = fused / w.sum(1).clamp(min=1.0)[:, None, None, None].to(fused.dtype)
        masks = w[:, :, None, None].expand(-1, -1, *hw).to(fused.dtype)
        return torch.cat([fused, masks], 1)


class BEVDecoder(nn.Module):
    """The light shared decoder after fusion: (B, in_channels, H, W) -> (B, channels, H, W). One stride-2 stage for
    context (a 1x1 skip at full resolution plus the upsampled stage), as small as the branches' own BEV stages
    allow: every FLOP here is paid whatever the gate chooses."""

    def __init__(self, in_channels: int, channels: int = 16):
        super().__init__()
        c = channels
        self.skip = nn.Sequential(nn.Conv2d(in_channels, c, 1, bias=False), norm2d(c))
        self.down = nn.Sequential(conv_block(in_channels, 2 * c, 2), conv_block(2 * c, 2 * c))
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 2, 2, bias=False), norm2d(c))
        self.channels = c

    def forward(self, x: Tensor) -> Tensor:
        y = self.up(self.down(x))
        return torch.relu(self.skip(x) + y[..., :x.shape[-2], :x.shape[-1]])


class FusionDetector(nn.Module):
    """Encoders + fusion + decoder + head. forward(batch, decisions) -> DetectorOutput (fusion/head.py).
    doppler_velocity: decode with the radar's Doppler map (set_doppler_velocity)."""

    def __init__(self, camera: CameraEncoder, lidar: LidarEncoder, radar: RadarEncoder, fusion: MaskedFusion,
                 decoder: BEVDecoder, head: CenterHead, camera_heatmap: nn.Module | None = None,
                 doppler_velocity: bool = False):
        super().__init__()
        self.camera, self.lidar, self.radar = camera, lidar, radar
        self.fusion, self.decoder, self.head = fusion, decoder, head
        self.camera_heatmap = camera_heatmap
        self.grid: BEVGrid = head.grid
        self.set_doppler_velocity(doppler_velocity)

    def run_encoder(self, sensor: str, batch: Batch, idx: Tensor, mode: str, aux: list[dict] | None = None,
                    views: Tensor | None = None) -> Tensor:
        """The `sensor` encoder at `mode` on frames `idx` (K,) of the batch -> (K, C, H, W). With a list `aux`,
        the camera's training losses on these frames are appended to it: its depth supervised by the batch's
        LiDAR points (used whether or not the frame chose LiDAR) and its image semantics supervised by the boxes
        (sensors/camera.py). `views` (K, N_cam) bool: the camera views that run (default all)."""
        B = len(batch)
        whole = len(idx) == B and bool((idx == torch.arange(B, device=idx.device)).all())
        if sensor == "camera":
            camera = batch.camera if whole else batch.camera.select(idx)
            if aux is None:
                return self.camera(camera, mode, views=views)[0]
            (p, i), _ = select_points(batch.lidar.points, batch.lidar.batch_index, idx, B)
            bev, losses = self.camera(camera, mode, p, i, [batch.gt[j] for j in idx.tolist()], views=views)
            aux.append(losses)
            return bev
        data = batch.lidar if sensor == "lidar" else batch.radar
        p, i = (data.points, data.batch_index) if whole else select_points(data.points, data.batch_index, idx, B)[0]
        encoder = self.lidar if sensor == "lidar" else self.radar
        return encoder(type(data)(p, i), len(idx), mode)

    def encode(self, batch: Batch, decisions: Tensor, aux: list[dict] | None = None, views: Tensor | None = None,
               tiles: Tensor | None = None) -> dict[str, Tensor | None]:
        """sensor -> (B, C_s, H, W) (zeros for frames that did not use it) or None where no frame used it; `aux`
        collects auxiliary losses (see run_encoder); `views` and `tiles`: the decisions below the sensor (forward)."""
        B = len(batch)
        out: dict[str, Tensor | None] = {}
        for s_i, s in enumerate(SENSORS):
            feat, filled = None, torch.zeros(B, dtype=torch.bool, device=decisions.device)
            for m_i, mode in enumerate(MODES[s]):
                if m_i == 0:
                    continue
                on = None
                if s == "camera" and views is not None:  # the frames with a view at this mode, and those views
                    idx = torch.nonzero((decisions[:, s_i] > 0) & (views == m_i).any(1)).flatten()
                    on = views[idx] == m_i
                else:
                    idx = torch.nonzero(decisions[:, s_i] == m_i).flatten()
                if len(idx) == 0:
                    continue
                sub = self.run_encoder(s, batch, idx, mode, aux, on)
                if s == "lidar" and mode == "fine" and tiles is not None:
                    sub = self.coarse_outside_tiles(batch, idx, sub, tiles[idx])
                if feat is None:
                    feat = sub if len(idx) == B else sub.new_zeros(B, *sub.shape[1:]).index_copy(0, idx, sub)
                elif on is not None and bool(filled[idx].any()):  # views of both modes: high where its views see
                    keep = ~self.camera.coverage(batch.camera.select(idx), on) & filled[idx, None, None, None]
                    feat = feat.index_copy(0, idx, torch.where(keep, feat[idx], sub))
                else:
                    feat = feat.index_copy(0, idx, sub)
                filled[idx] = True
            out[s] = feat
        return out

    def coarse_outside_tiles(self, batch: Batch, idx: Tensor, fine: Tensor, tiles: Tensor) -> Tensor:
        """The LiDAR features of frames `idx` (K,) that chose fine, (K, C, H, W), with the coarse mode's in the cells
        outside their fine tiles (K, T, T) bool (tile_cells). The fine map is computed whole and composited: the
        detection value of a per-region decision; the compute it saves is fusion/cost.py's tile cost."""
        partial = torch.nonzero(~tiles.flatten(1).all(1)).flatten()
        if len(partial) == 0:
            return fine
        coarse = self.run_encoder("lidar", batch, idx[partial], "coarse")
        return fine.index_copy(0, partial, composite_tiles(fine[partial], coarse, tiles[partial], self.grid))

    def forward(self, batch: Batch, decisions: Tensor, weights: Tensor | None = None, views: Tensor | None = None,
                tiles: Tensor | None = None) -> DetectorOutput:
        """decisions (B, 3) long mode indices (a sensor not present is forced off) -> DetectorOutput; weights (B, 3):
        the gate's straight-through selection values that multiply each sensor's features (MaskedFusion). In training
        mode, where a camera ran, the output also carries the camera's depth and semantic losses and, with a
        camera_heatmap head, the logits of the camera's BEV alone and the frames they are of.

        Decisions below the sensor, optional: `views` (B, N_cam) long, the camera's mode index per view (a view at 0
        never runs; where views of both modes run, each cell takes the high views' features where they see it,
        CameraEncoder.coverage); the camera column of `decisions` then becomes the highest mode of each frame's views.
        `tiles` (B, T, T) bool: where a frame's LiDAR runs fine, fine in these tiles of the grid and coarse outside
        them (coarse_outside_tiles)."""
        B = len(batch)
        if decisions.shape != (B, len(SENSORS)):
            raise ValueError(f"FusionDetector: decisions must be ({B}, 3), got {tuple(decisions.shape)}")
        decisions = decisions.long()
        if views is not None:
            if views.ndim != 2 or len(views) != B or views.dtype == torch.bool:
                raise ValueError(f"FusionDetector: views must be ({B}, N_cam) camera mode indices, got "
                                 f"{tuple(views.shape)} {views.dtype}")
            if bool(((views < 0) | (views >= len(MODES["camera"]))).any()):
                raise ValueError(f"FusionDetector: views must be camera mode indices 0-{len(MODES['camera']) - 1} "
                                 f"({MODES['camera']}), got {views.tolist()}")
            decisions = decisions.clone()
            decisions[:, SENSORS.index("camera")] = views.long().amax(1)
        if tiles is not None and (tiles.ndim != 3 or len(tiles) != B or tiles.shape[1] != tiles.shape[2]
                                  or tiles.dtype != torch.bool):
            raise ValueError(f"FusionDetector: tiles must be ({B}, T, T) bool, got {tuple(tiles.shape)} {tiles.dtype}")
        decisions = torch.where(batch.present.bool(), decisions, torch.zeros_like(decisions))
        aux: list[dict] | None = [] if self.training else None
        features = self.encode(batch, decisions, aux, views, tiles)
        outputs = self.shared(features, decisions > 0, weights)
        if aux:
            outputs.camera_depth_loss = torch.stack([a["depth"] for a in aux]).mean()
            outputs.camera_semantic_loss = torch.stack([a["semantic"] for a in aux]).mean()
        if self.training and self.camera_heatmap is not None and features["camera"] is not None:
            rows = torch.nonzero(decisions[:, SENSORS.index("camera")] > 0).flatten()
            outputs.camera_heatmap = self.camera_heatmap(features["camera"][rows])
            outputs.camera_frames = rows
        return outputs

    def set_doppler_velocity(self, on: bool) -> None:
        """Decode with (on) or without the radar's radial velocity resolved along each box's heading (fusion/head.py):
        on, `shared` hands the head the radar's Doppler map. Decoding only."""
        if on and self.radar.out_channels == self.radar.channels:
            raise ValueError("doppler_velocity needs radar_doppler (the Doppler map it reads)")
        self.doppler_velocity = on

    def shared(self, features: dict[str, Tensor | None], used: Tensor, weights: Tensor | None = None
               ) -> DetectorOutput:
        """Fusion + decoder + head on given encoder features (used by fusion/cost.py); with doppler_velocity, the
        radar's Doppler map (its channels past the learned ones, in the BEV features' dtype) goes to the head beside
        them, None where no frame ran the radar."""
        bev = self.fused_bev(features, used, weights)
        radar = features.get("radar") if self.doppler_velocity else None
        return self.head(bev, None if radar is None else radar[:, self.radar.channels:].to(bev.dtype))

    def fused_bev(self, features: dict[str, Tensor | None], used: Tensor, weights: Tensor | None = None) -> Tensor:
        """Fusion + decoder: the (B, C, H, W) BEV features the head reads. An encoder's measurement maps, its channels
        past its learned `channels` (the LiDAR's motion map, LidarEncoder motion; the radar's Doppler map,
        RadarEncoder doppler), skip the fusion and the decoder and join the decoder's output unlearned, zeros for the
        frames without that sensor."""
        learned, measured = dict(features), []
        for s in SENSORS:
            encoder, f = getattr(self, s), features.get(s)
            C = encoder.channels
            if f is not None:
                learned[s] = f[:, :C]
            if encoder.out_channels > C:
                measured.append((encoder.out_channels - C, None if f is None else f[:, C:]))
        bev = self.decoder(self.fusion(learned, used, (self.grid.H, self.grid.W), weights))
        if not measured:
            return bev
        return torch.cat([bev] + [bev.new_zeros(len(bev), n, *bev.shape[-2:]) if m is None else m.to(bev.dtype)
                                  for n, m in measured], 1)


def tile_cells(tiles: Tensor, grid: BEVGrid) -> Tensor:
    """(B, T, T) bool per tile -> (B, H, W) bool per cell of `grid`: T x T tiles of equal size (rows of tiles along
    the grid's rows, +y; columns along +x; where T does not divide H or W, cell i belongs to tile i * T // H)."""
    T = tiles.shape[-1]
    rows = torch.arange(grid.H, device=tiles.device) * T // grid.H
    cols = torch.arange(grid.W, device=tiles.device) * T // grid.W
    return tiles[:, rows][:, :, cols]


def composite_tiles(fine: Tensor, coarse: Tensor, tiles: Tensor, grid: BEVGrid) -> Tensor:
    """(B, C, H, W) LiDAR features: `fine`'s in the cells of the fine tiles (B, T, T) bool, `coarse`'s elsewhere."""
    return torch.where(tile_cells(tiles, grid)[:, None], fine, coarse)


def build_detector(bev_range: float = 51.2, bev_cell: float = 0.8, z_min: float = -2.0, z_max: float = 4.0,
                   camera_width: int = 16, camera_channels: int = 32, camera_heights: int = 4,
                   camera_bev_factor: int = 2, camera_bev_blocks: int = 2, lidar_channels: int = 32,
                   lidar_coarse_points: int = 16384, lidar_fine_points: int = 65536, lidar_bev_blocks: int = 3,
                   radar_channels: int = 16, radar_points: int = 4096,
                   fusion_channels: int = 32, bev_channels: int = 32, head_channels: int = 32,
                   score_threshold: float = 0.05, max_detections: int = 500, heatmap_weight: float = 1.0,
                   regression_weight: float = 0.25, attribute_weight: float = 0.2,
                   camera_depth_bins: int = 32, direction_weight: float = 0.2,
                   camera_heatmap: bool = False, lidar_time_split: bool = False,
                   radar_context: bool = False, radar_doppler: bool = False, lidar_motion: bool = False,
                   doppler_velocity: bool = False, camera_backbone: str = "small",
                   camera_backbone_weights: str | None = None) -> FusionDetector:
    """A FusionDetector from plain hyperparameters (square BEV range [-bev_range, bev_range] m). camera_heatmap: a
    training-only class heatmap (one 3x3 conv) on the camera's BEV alone, so that the camera branch learns to
    detect on its own rather than only as a helper of the LiDAR (its loss weight is the module's). This signature
    is the one declaration of the detector's hyperparameters: GateFusionModule passes its **detector on by name.
    lidar_time_split: the LiDAR pillars keep the key sweep and the earlier sweeps apart (sensors/lidar.py);
    radar_context: the radar's BEV convs become a BEV stage with a context level (sensors/radar.py);
    radar_doppler: the radar's measured velocity as a map reaches the head directly (sensors/radar.py);
    lidar_motion: the LiDAR's sweep-to-sweep displacement as a map reaches the head directly (sensors/lidar.py);
    doppler_velocity: decoding resolves the radar's radial velocity along each box's heading (fusion/head.py; needs
    radar_doppler); camera_backbone: the camera's image CNN, "small" (our own), "resnet18" or "resnet50"
    (torchvision's), with camera_backbone_weights None (random), "torchvision" (its cache) or a state dict's path
    (sensors/camera.py)."""
    if direction_weight < 0:
        raise ValueError(f"build_detector: direction_weight must be >= 0, got {direction_weight}")
    grid = BEVGrid((-bev_range, bev_range), (-bev_range, bev_range), bev_cell, (z_min, z_max))
    camera = CameraEncoder(grid, camera_width, camera_channels, camera_heights, camera_bev_factor,
                           camera_depth_bins, camera_bev_blocks, camera_backbone, camera_backbone_weights)
    lidar = LidarEncoder(grid, lidar_channels, lidar_coarse_points, lidar_fine_points, lidar_bev_blocks,
                         lidar_time_split, lidar_motion)
    radar = RadarEncoder(grid, radar_channels, radar_points, radar_context, radar_doppler)
    fusion = MaskedFusion({"camera": camera_channels, "lidar": lidar_channels, "radar": radar_channels},
                          fusion_channels)
    decoder = BEVDecoder(fusion_channels + len(SENSORS), bev_channels)
    measured = sum(e.out_channels - e.channels for e in (camera, lidar, radar))
    head = CenterHead(grid, bev_channels + measured, head_channels,
                      heatmap_weight=heatmap_weight, regression_weight=regression_weight,
                      attribute_weight=attribute_weight, direction_weight=direction_weight,
                      score_threshold=score_threshold, max_detections=max_detections)
    aux_head = None
    if camera_heatmap:
        aux_head = nn.Conv2d(camera_channels, len(CLASSES), 3, padding=1)
        nn.init.constant_(aux_head.bias, -math.log((1 - 0.01) / 0.01))
    return FusionDetector(camera, lidar, radar, fusion, decoder, head, aux_head, doppler_velocity)
