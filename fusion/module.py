"""GateFusionModule: the LightningModule that trains and runs the fusion detector.

Training uses the static sensor configuration (`sensors`), except that with probability `train_sensor_dropout`
per frame a random non-empty subset of the present sensors at random resolutions is used instead, so that one
model can be evaluated under every static configuration. Validation and `detect` use the static configuration
(or the one given). Hyperparameters are plain values (save_hyperparameters), so
`GateFusionModule.load_from_checkpoint(path, map_location="cpu")` rebuilds it.
"""
from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import Tensor

from fusion.cost import branch_gflops, config_gflops
from fusion.detector import FrameRecord, SensorConfig, build_detector
from sensors.frame import Batch, Detections
from sensors.names import MODES, SENSORS


def random_decisions(present: Tensor, static: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3) bool present, (B, 3) long static decisions -> (B, 3) long: each frame with probability p gets a
    random non-empty subset of its present sensors (uniform over subsets: each sensor alone gets as many frames as
    any combination) with a random non-off mode per sensor of the subset."""
    B, device = present.shape[0], present.device
    out = static.clone()
    pick = torch.rand(B, generator=generator) < p
    for b in torch.nonzero(pick).flatten().tolist():
        avail = [i for i in range(len(SENSORS)) if bool(present[b, i])]
        if not avail:
            continue
        mask = int(torch.randint(1, 2 ** len(avail), (1,), generator=generator))
        row = [0] * len(SENSORS)
        for j, i in enumerate(avail):
            if mask >> j & 1:
                row[i] = int(torch.randint(1, len(MODES[SENSORS[i]]), (1,), generator=generator))
        out[b] = torch.tensor(row, device=device)
    return out


def one_cycle(step: int, total: int, pct_start: float = 0.2, div: float = 25.0, final_div: float = 1e4) -> float:
    """Learning-rate factor of OneCycleLR's cosine schedule: lr/div -> lr over the first pct_start of `total`
    steps, then down to lr/(div * final_div)."""
    warm = max(1, int(pct_start * total))
    if step < warm:
        return 1 / div + (1 - 1 / div) * (1 - math.cos(math.pi * step / warm)) / 2
    p = min(1.0, (step - warm) / max(1, total - warm))
    low = 1 / (div * final_div)
    return low + (1 - low) * (1 + math.cos(math.pi * p)) / 2


class GateFusionModule(pl.LightningModule):
    """Detector (fusion/detector.py) + losses + optimisation.

    sensors:              static configuration for validation / inference, e.g. "camera=high,lidar=fine,radar=on"
    train_sensor_dropout: per-frame probability of training with a random sensor subset / resolution
    lr, weight_decay:     AdamW; one-cycle schedule (peak lr, warm-up fraction pct_start) over all training steps
    camera_depth_weight:  weight of the camera depth loss supervised by LiDAR (sensors/camera.py), training only
    camera_semantic_weight: weight of the camera's image-space semantic loss supervised by the boxes projected into
                          the images (sensors/camera.py), training only
    camera_heatmap_weight: weight of the training-only heatmap loss of the camera's BEV alone (0: no such head;
                          see build_detector)
    **detector:           build_detector's hyperparameters (grid, widths, point budgets, head loss weights), passed
                          on by name. They are declared once, in build_detector's signature; LightningCLI reads them
                          from there (they are flat `model.*` keys of the YAML configs) and save_hyperparameters
                          stores them flat, so `load_from_checkpoint` rebuilds the same detector.
    """

    def __init__(self, sensors: str = "camera=high,lidar=fine,radar=on", train_sensor_dropout: float = 0.5,
                 lr: float = 2e-3, weight_decay: float = 1e-2, pct_start: float = 0.2,
                 camera_depth_weight: float = 0.5, camera_heatmap_weight: float = 0.0,
                 camera_semantic_weight: float = 0.0, **detector):
        super().__init__()
        self.save_hyperparameters()
        self.static = SensorConfig.parse(sensors)
        if self.static.indices() == (0, 0, 0):
            raise ValueError(f"GateFusionModule: sensors {sensors!r} turns every sensor off")
        for name, value in (("camera_depth_weight", camera_depth_weight),
                            ("camera_heatmap_weight", camera_heatmap_weight),
                            ("camera_semantic_weight", camera_semantic_weight)):
            if value < 0:
                raise ValueError(f"GateFusionModule: {name} must be >= 0, got {value}")
        if not 0.0 <= train_sensor_dropout <= 1.0:
            raise ValueError(f"GateFusionModule: train_sensor_dropout must be in [0, 1], got {train_sensor_dropout}")
        self.detector = build_detector(camera_heatmap=camera_heatmap_weight > 0, **detector)
        self._cost_table: dict | None = None

    def forward(self, batch: Batch, decisions: Tensor) -> dict[str, Tensor]:
        return self.detector(batch, decisions)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, Batch) else super().transfer_batch_to_device(batch, device,
                                                                                                  dataloader_idx)

    def training_decisions(self, batch: Batch) -> Tensor:
        static = self.static.decisions(batch.present)
        return random_decisions(batch.present, static, self.hparams.train_sensor_dropout)

    def _step(self, batch: Batch, decisions: Tensor, stage: str) -> Tensor:
        outputs = self(batch, decisions)
        losses = self.detector.head.loss(outputs, batch.gt)
        for name in ("depth", "semantic"):  # training only: the camera's depth (LiDAR) and image semantics (boxes)
            if f"camera_{name}_loss" in outputs:
                losses[f"camera_{name}"] = outputs[f"camera_{name}_loss"]
                losses["loss"] = losses["loss"] + self.hparams[f"camera_{name}_weight"] * losses[f"camera_{name}"]
        if "camera_heatmap" in losses:  # training only: the camera's BEV detecting alone
            losses["loss"] = losses["loss"] + self.hparams.camera_heatmap_weight * losses["camera_heatmap"]
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=len(batch),
                      prog_bar=False, sync_dist=stage != "train")
        self.log(f"{stage}_loss", losses["loss"].detach(), batch_size=len(batch), prog_bar=True,
                 sync_dist=stage != "train")
        return losses["loss"]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, self.training_decisions(batch), "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, self.static.decisions(batch.present), "val")

    def configure_optimizers(self):
        """AdamW + a one-cycle schedule over trainer.estimated_stepping_batches. The schedule is a LambdaLR of the
        step (nothing of it is in the checkpoint), so a run resumed with a larger max_epochs stretches it to the
        new length instead of failing like OneCycleLR, whose saved total_steps would be exceeded."""
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        pct = self.hparams.pct_start
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: one_cycle(step, total, pct))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def cost_table(self, batch: Batch) -> dict:
        """GFLOPs per (sensor, mode) (fusion/cost.py), counted once on the first frame seen and cached."""
        if self._cost_table is None:
            try:  # never count inside an outer FlopCounterMode (e.g. evaluation's own count)
                from torch.utils._python_dispatch import _disable_current_modes
            except ImportError:  # pragma: no cover
                from contextlib import nullcontext as _disable_current_modes
            with _disable_current_modes():
                self._cost_table = branch_gflops(self.detector, batch)
        return self._cost_table

    @torch.no_grad()
    def detect(self, batch: Batch, sensors: SensorConfig | None = None) -> tuple[list[Detections], list[FrameRecord]]:
        """Eval-mode detections of a batch under a static configuration (default: `sensors` of the
        hyperparameters), sensors not present in a frame turned off; one FrameRecord per frame."""
        config = sensors if sensors is not None else self.static
        was_training = self.training
        self.eval()
        try:
            decisions = config.decisions(batch.present)
            detections = self.detector.head.decode(self.detector(batch, decisions))
        finally:
            self.train(was_training)
        table = self.cost_table(batch)
        records = []
        for b, row in enumerate(decisions.tolist()):
            used = SensorConfig.from_indices(row)
            token = batch.meta[b].sample_token if b < len(batch.meta) else ""
            records.append(FrameRecord(token, used.camera, used.lidar, used.radar, config_gflops(table, used)))
        return detections, records
