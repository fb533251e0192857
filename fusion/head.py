"""CenterPoint-style detection head on the shared BEV grid: targets, losses and decoding.

Outputs: a DetectorOutput (the maps of the head, what the detector adds to them, shapes in its docstring).
Yaw is split as in SECOND: the box axis as (sin 2yaw, cos 2yaw), which is the same for yaw and yaw + pi, so a
front/back ambiguity cannot wash out the axis, and a direction logit (is cos(yaw) >= 0) that picks the half.
Targets: a gaussian per box on its class heatmap (CenterPoint radius, min_overlap 0.1, at least `min_radius`
cells), regression, direction and attribute targets at the box's centre cell. Losses: penalty-reduced focal
loss, masked L1 (squared error for velocity), direction binary cross-entropy, attribute cross-entropy among the
attributes valid for the class. Decoding: 3x3 max-pool peak NMS, top-k, score threshold, at most `max_detections`
per frame -> sensors.frame.Detections.

Radial velocity at decoding (`doppler`, the radar's Doppler map of sensors/radar.py, which the detector passes to
the head where it decodes with doppler_velocity): the radar measures only the component of an object's velocity
along its line of sight, r = (v . u) u. An object moves along its axis a (v = s a), so r . a = s (a . u)^2 and
|r|^2 = s^2 (a . u)^2: s = |r|^2 / (r . a), the full velocity along the predicted heading (RadarNet's velocity
resolution, Yang et al. 2020, without its learned attention over the returns). A detection takes it in place of its
regressed velocity where its centre cell has radar returns, a radial speed of at least DOPPLER_MIN_SPEED and an axis
within DOPPLER_MAX_ANGLE of the radial direction (beyond it, 1 / cos amplifies the noise); elsewhere it keeps the
regressed one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sensors.bev import BEVGrid, conv_block
from sensors.frame import Boxes, Detections
from sensors.names import ATTRIBUTES, CLASSES

REG_DIMS = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin2", "cos2", "vx", "vy")
# Velocity (half squared error, see loss) at 0.5; CenterPoint's 0.2 is for L1 over 20 epochs.
REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5)
VEL = REG_DIMS.index("vx")  # velocity dims: VEL and VEL + 1
DOPPLER_MIN_SPEED = 0.5  # m/s of measured radial speed
DOPPLER_MAX_ANGLE = math.pi / 3  # between the box axis and the radial direction: at most 2x amplification


@dataclass
class DetectorOutput:
    """The detector's outputs, on the BEV grid (H, W) of fusion/bev.py, for B frames.

    heatmap (B, 10, H, W): class logits per CLASSES; regression (B, 10, H, W): per REG_DIMS; attribute (B, 8, H, W):
    logits per ATTRIBUTES; direction (B, 1, H, W): logit of cos(yaw) >= 0.
    doppler (B, 3, H, W) or None: the radar's Doppler map (vx, vy in m/s / 10, log(1 + count) / 5) that decoding
    resolves along each box's heading; None where the detector decodes without it (doppler_velocity off) or no frame
    ran the radar.
    Training mode only, None otherwise: camera_depth_loss and camera_semantic_loss (scalars), the camera's depth
    supervised by the LiDAR and its image semantics supervised by the boxes (sensors/camera.py), where a frame ran the
    camera; camera_heatmap (K, 10, H, W), class logits of the camera's BEV alone for the K frames camera_frames (K,)
    long that ran the camera (with the detector's camera_heatmap head)."""

    heatmap: Tensor
    regression: Tensor
    attribute: Tensor
    direction: Tensor
    doppler: Tensor | None = None
    camera_depth_loss: Tensor | None = None
    camera_semantic_loss: Tensor | None = None
    camera_heatmap: Tensor | None = None
    camera_frames: Tensor | None = None

    def frame(self, b: int) -> "DetectorOutput":
        """The four maps of frame b alone, (1, C, H, W) each: what the detection loss of one frame reads."""
        return DetectorOutput(self.heatmap[b:b + 1], self.regression[b:b + 1], self.attribute[b:b + 1],
                              self.direction[b:b + 1])


def valid_attributes() -> Tensor:
    """(10, 8) bool: which ATTRIBUTES a class of CLASSES can have (none for barrier and traffic_cone)."""
    prefix = {"car": "vehicle.", "truck": "vehicle.", "construction_vehicle": "vehicle.", "bus": "vehicle.",
              "trailer": "vehicle.", "motorcycle": "cycle.", "bicycle": "cycle.", "pedestrian": "pedestrian."}
    return torch.tensor([[c in prefix and a.startswith(prefix[c]) for a in ATTRIBUTES] for c in CLASSES])


def gaussian_radius(length: Tensor, width: Tensor, min_overlap: float = 0.1) -> Tensor:
    """CenterNet/CenterPoint radius (in cells) of a gaussian for boxes of size (length, width) in cells."""
    b1 = length + width
    c1 = width * length * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (length + width)
    c2 = (1 - min_overlap) * width * length
    r2 = (b2 + torch.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (length + width)
    c3 = (min_overlap - 1) * width * length
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def focal_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet's penalty-reduced focal loss of heatmap logits (B, C, H, W) against gaussian targets, per
    positive (target 1) cell; finite without positives."""
    logits = logits.float()
    pos = target.eq(1).float()
    pred = torch.sigmoid(logits)
    pos_loss = F.logsigmoid(logits) * (1 - pred) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * pred ** 2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


class CenterHead(nn.Module):
    """(B, in_channels, H, W) BEV features -> DetectorOutput of heatmap / regression / attribute / direction maps."""

    def __init__(self, grid: BEVGrid, in_channels: int, channels: int = 32, min_radius: int = 2,
                 heatmap_weight: float = 1.0, regression_weight: float = 0.25, attribute_weight: float = 0.2,
                 score_threshold: float = 0.05, max_detections: int = 500, direction_weight: float = 0.2):
        super().__init__()
        self.grid = grid
        self.min_radius = min_radius
        self.weights = (heatmap_weight, regression_weight, attribute_weight, direction_weight)
        self.score_threshold = score_threshold
        self.max_detections = max_detections
        self.shared = conv_block(in_channels, channels)
        self.heatmap = nn.Sequential(conv_block(channels, channels), nn.Conv2d(channels, len(CLASSES), 1))
        self.regression = nn.Sequential(conv_block(channels, channels), nn.Conv2d(channels, len(REG_DIMS), 1))
        self.attribute = nn.Conv2d(channels, len(ATTRIBUTES), 1)
        self.direction = nn.Conv2d(channels, 1, 1)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.01) / 0.01))
        self.register_buffer("valid_attr", valid_attributes(), persistent=False)
        self.register_buffer("reg_weights", torch.tensor(REG_WEIGHTS), persistent=False)

    def forward(self, x: Tensor, doppler: Tensor | None = None) -> DetectorOutput:
        """x (B, in_channels, H, W); doppler (B, 3, H, W) or None: the radar's Doppler map, kept in the outputs for
        decode to resolve the radial velocity (module docstring), None to decode the regressed velocity."""
        x = self.shared(x)
        return DetectorOutput(self.heatmap(x), self.regression(x), self.attribute(x), self.direction(x), doppler)

    # targets -------------------------------------------------------------------------------------------------
    def targets(self, gt: list[Boxes], device=None) -> dict[str, Tensor]:
        """Dense targets of B frames: heatmap (B, 10, H, W), regression (B, 10, H, W), mask (B, H, W) bool
        (centre cells), label (B, H, W) long, attribute (B, H, W) long (-1: none / ignore) and direction (B, H, W)
        float (1 where cos(yaw) >= 0)."""
        g, B = self.grid, len(gt)
        H, W = g.H, g.W
        device = device if device is not None else (gt[0].boxes.device if gt else None)
        heat = torch.zeros(B, len(CLASSES), H * W, device=device)
        reg = torch.zeros(B, len(REG_DIMS), H * W, device=device)
        mask = torch.zeros(B, H * W, dtype=torch.bool, device=device)
        label = torch.zeros(B, H * W, dtype=torch.long, device=device)
        attr = torch.full((B, H * W), -1, dtype=torch.long, device=device)
        direction = torch.zeros(B, H * W, device=device)
        rows = torch.arange(H, device=device, dtype=torch.float32)
        cols = torch.arange(W, device=device, dtype=torch.float32)
        for b, boxes in enumerate(gt):
            bx = boxes.boxes.to(device).float()
            if bx.ndim != 2 or bx.shape[1] != 9:
                raise ValueError(f"CenterHead.targets: frame {b} boxes must be (K, 9), got {tuple(bx.shape)}")
            labels, attributes = boxes.labels.to(device).long(), boxes.attributes.to(device).long()
            col, row, inside = g.cell_index(bx[:, :2])
            inside &= torch.isfinite(bx).all(1) & (labels >= 0) & (labels < len(CLASSES))
            bx, labels, attributes, col, row = bx[inside], labels[inside], attributes[inside], col[inside], row[inside]
            if len(bx) == 0:
                continue
            radius = gaussian_radius(bx[:, 3] / g.cell, bx[:, 4] / g.cell).floor().clamp(min=self.min_radius)
            sigma = (2 * radius + 1) / 6
            dr = rows[None, :, None] - row[:, None, None].float()
            dc = cols[None, None, :] - col[:, None, None].float()
            gauss = torch.exp(-(dr ** 2 + dc ** 2) / (2 * sigma[:, None, None] ** 2))
            near = (dr.abs() <= radius[:, None, None]) & (dc.abs() <= radius[:, None, None])
            gauss = (gauss * near).flatten(1)
            heat[b] = heat[b].scatter_reduce(0, labels[:, None].expand(-1, H * W), gauss, "amax")
            flat = row * W + col
            cr = g.to_cell(bx[:, :2])
            values = torch.stack([
                cr[:, 0] - col, cr[:, 1] - row, bx[:, 2],
                bx[:, 3].clamp(min=1e-3).log(), bx[:, 4].clamp(min=1e-3).log(), bx[:, 5].clamp(min=1e-3).log(),
                torch.sin(2 * bx[:, 6]), torch.cos(2 * bx[:, 6]), bx[:, 7], bx[:, 8]], 0)
            reg[b][:, flat] = values
            mask[b, flat] = True
            label[b, flat] = labels
            direction[b, flat] = (torch.cos(bx[:, 6]) >= 0).float()
            attr[b, flat] = torch.where(self.valid_attr[labels, attributes.clamp(min=0)] & (attributes >= 0),
                                        attributes, -1)
        shape = (B, H, W)
        return {"heatmap": heat.view(B, -1, H, W), "regression": reg.view(B, -1, H, W), "mask": mask.view(shape),
                "label": label.view(shape), "attribute": attr.view(shape), "direction": direction.view(shape)}

    # losses --------------------------------------------------------------------------------------------------
    def frame_losses(self, outputs: DetectorOutput, gt: list[Boxes]) -> Tensor:
        """(B,) the weighted detection loss ("loss" of `loss`) of each frame on its own: what the gate learns to
        predict for the configuration the frame ran (fusion/gate.py)."""
        return torch.stack([self.loss(outputs.frame(b), [g])["loss"] for b, g in enumerate(gt)])

    def loss(self, outputs: DetectorOutput, gt: list[Boxes]) -> dict[str, Tensor]:
        """Scalar losses: heatmap (focal), regression (L1), attribute (CE), direction (BCE) and their weighted sum
        "loss"; with the outputs' camera_heatmap also that focal loss, "camera_heatmap" (not in "loss": its weight
        is the module's). Finite for frames without boxes."""
        t = self.targets(gt, outputs.heatmap.device)
        heatmap = focal_loss(outputs.heatmap, t["heatmap"])

        mask = t["mask"]
        reg_pred = outputs.regression.float().permute(0, 2, 3, 1)[mask]
        reg_target = t["regression"].permute(0, 2, 3, 1)[mask]
        err = reg_pred - reg_target
        # L1, except half the squared error for velocity: most boxes stand still, and under L1 their constant-size
        # pulls held every prediction at the median, 0 (8 memorised frames kept |v| ~ 0.1 against 5.5 m/s
        # targets, with Huber (beta 1 m/s) too); the squared error pulls by the size of the error, so the moving
        # boxes win.
        per_dim = torch.cat([err[:, :VEL].abs(), 0.5 * err[:, VEL:] ** 2], 1)
        regression = (per_dim * self.reg_weights).sum() / max(int(mask.sum()), 1)

        attr_logits = outputs.attribute.float().permute(0, 2, 3, 1)[mask]
        attr_target, labels = t["attribute"][mask], t["label"][mask]
        has = attr_target >= 0
        if bool(has.any()):
            masked = attr_logits[has].masked_fill(~self.valid_attr[labels[has]], -1e4)
            attribute = F.cross_entropy(masked, attr_target[has])
        else:
            attribute = attr_logits.sum() * 0.0
        dir_logits = outputs.direction.float()[:, 0][mask]
        direction = (F.binary_cross_entropy_with_logits(dir_logits, t["direction"][mask]) if len(dir_logits)
                     else dir_logits.sum() * 0.0)
        wh, wr, wa, wd = self.weights
        out = {"loss": wh * heatmap + wr * regression + wa * attribute + wd * direction, "heatmap": heatmap,
               "regression": regression, "attribute": attribute, "direction": direction}
        if outputs.camera_heatmap is not None:  # training only: the camera's own heatmap (FusionDetector)
            out["camera_heatmap"] = focal_loss(outputs.camera_heatmap, t["heatmap"][outputs.camera_frames])
        return out

    # decoding ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, outputs: DetectorOutput, score_threshold: float | None = None,
               max_detections: int | None = None) -> list[Detections]:
        """Peaks of the class heatmaps -> one Detections per frame (ego frame, best first)."""
        thr = self.score_threshold if score_threshold is None else score_threshold
        k_max = self.max_detections if max_detections is None else max_detections
        g = self.grid
        heat = torch.sigmoid(outputs.heatmap.float())
        B, C, H, W = heat.shape
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
        k = min(k_max, C * H * W)
        scores, idx = peaks.flatten(1).topk(k, dim=1)
        labels = idx // (H * W)
        pix = idx % (H * W)
        row, col = (pix // W).float(), (pix % W).float()
        reg = outputs.regression.float().flatten(2).gather(2, pix[:, None].expand(-1, len(REG_DIMS), -1))
        reg = reg.transpose(1, 2)  # (B, k, 10)
        xy = g.to_metric(torch.stack([col + reg[..., 0], row + reg[..., 1]], -1))
        size = reg[..., 3:6].clamp(max=6.0).exp()
        axis = torch.atan2(reg[..., 6], reg[..., 7]) / 2  # in (-pi/2, pi/2]: cos >= 0
        forward = outputs.direction.float().flatten(1).gather(1, pix) >= 0
        yaw = torch.where(forward, axis, axis + math.pi)
        yaw = torch.atan2(torch.sin(yaw), torch.cos(yaw))
        velocity = reg[..., VEL:VEL + 2]
        if outputs.doppler is not None:
            velocity = self.radial_velocity(outputs.doppler.float(), pix, yaw, velocity)
        boxes = torch.cat([xy, reg[..., 2:3], size, yaw[..., None], velocity], -1)
        attr_logits = outputs.attribute.float().flatten(2).gather(2, pix[:, None].expand(-1, len(ATTRIBUTES), -1))
        valid = self.valid_attr[labels]  # (B, k, 8)
        attrs = attr_logits.transpose(1, 2).masked_fill(~valid, -torch.inf).argmax(-1)
        attrs = torch.where(valid.any(-1), attrs, -1)
        out = []
        for b in range(B):
            keep = scores[b] > thr
            out.append(Detections(boxes[b][keep], scores[b][keep], labels[b][keep], attrs[b][keep]))
        return out

    @staticmethod
    def radial_velocity(doppler: Tensor, pix: Tensor, yaw: Tensor, velocity: Tensor) -> Tensor:
        """The full velocity along the heading from the radial one (module docstring). doppler (B, 3, H, W): the
        Doppler map (vx, vy in m/s / 10, log(1 + count) / 5); pix (B, k) flat centre cells; yaw (B, k); velocity
        (B, k, 2) regressed -> (B, k, 2)."""
        cell = doppler.flatten(2).gather(2, pix[:, None].expand(-1, 3, -1)).transpose(1, 2)  # (B, k, 3)
        radial, seen = cell[..., :2] * 10.0, cell[..., 2] > 0
        axis = torch.stack([torch.cos(yaw), torch.sin(yaw)], -1)
        speed2, along = (radial ** 2).sum(-1), (radial * axis).sum(-1)
        use = seen & (speed2 >= DOPPLER_MIN_SPEED ** 2) & (along.abs() >= math.cos(DOPPLER_MAX_ANGLE) * speed2.sqrt())
        full = axis * (speed2 / torch.where(use, along, torch.ones_like(along)))[..., None]
        return torch.where(use[..., None], full, velocity)
