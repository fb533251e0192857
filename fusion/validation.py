"""NDS and mAP during training: `DetectionValidation`, a Lightning callback that scores the validation frames with the
devkit's DetectionEval and logs `val_nds` and `val_map`, so that ModelCheckpoint can keep the best checkpoint by what
users compare (`monitor: val_nds, mode: max`) instead of by val_loss.

It decodes the output of the validation forward that gave val_loss (GateFusionModule.validation_step returns it), so
the frames are run once. Under DDP each rank converts its frames to official result rows; the rows are gathered
(torch.distributed.all_gather_object), rank 0 runs DetectionEval on their union (DistributedSampler's padding
repeats a few frames: each is scored once), and the two numbers are broadcast so that every rank logs the same
value (ModelCheckpoint reads it on every rank). The frames are the datamodule's validation frames: the whole val
split, or the evenly spread subset its `val_frames` sets. The configuration scored is the static one
(`model.sensors`), as eval.py scores a checkpoint without --sensors or --budget, and the numbers are those of
fusion/evaluate.py on the same checkpoint and frames.

In a config:

    trainer:
      callbacks:
        - class_path: fusion.validation.DetectionValidation
          init_args: {every_n_epochs: 2}
        - class_path: pytorch_lightning.callbacks.ModelCheckpoint
          init_args: {save_last: true, monitor: val_nds, mode: max, save_top_k: 1}
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from sensors.names import SENSORS

LOGGED = ("val_nds", "val_map")


@dataclass
class ValidationScore:
    """One validation's score: NDS and mAP (NaN where the frames have no annotation), the distinct frames scored and
    how many each rank ran (DistributedSampler's padding counted)."""
    nds: float
    map: float
    frames: int
    frames_per_rank: list[int] = field(default_factory=list)


class DetectionValidation(pl.Callback):
    """Log val_nds and val_map (the devkit's detection_cvpr_2019 NDS and mAP of the static configuration on the
    validation frames) and val/nds_frames at the validation of every `every_n_epochs`-th epoch (epochs counted from
    1, as check_val_every_n_epoch and ModelCheckpoint's every_n_epochs count them); `trainer.validate` always scores.
    Nothing is logged at the other validations, so a ModelCheckpoint monitoring val_nds must save only on scored
    epochs: setup checks it. `last` holds the latest score (on every rank)."""

    def __init__(self, every_n_epochs: int = 1):
        super().__init__()
        if every_n_epochs < 1:
            raise ValueError(f"DetectionValidation: every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.last: ValidationScore | None = None
        self._due = False
        self._results: dict[str, list[dict]] = {}
        self._gt: dict[str, int] = {}
        self._ran = 0
        self._nusc = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """ValueError where a ModelCheckpoint monitors val_nds or val_map at validations this callback skips."""
        n, val_every = self.every_n_epochs, trainer.check_val_every_n_epoch or 1
        for ckpt in trainer.checkpoint_callbacks:
            saves_every = getattr(ckpt, "every_n_epochs", None) or 1
            if getattr(ckpt, "monitor", None) in LOGGED and val_every % n and saves_every % n:
                raise ValueError(f"DetectionValidation scores every {n} epochs, but ModelCheckpoint(monitor="
                                 f"{ckpt.monitor!r}) saves after every validation (check_val_every_n_epoch "
                                 f"{val_every}): set the checkpoint's every_n_epochs or check_val_every_n_epoch to a "
                                 f"multiple of {n}")

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        self._due = not trainer.sanity_checking and (
            not fitting or (trainer.current_epoch + 1) % self.every_n_epochs == 0)
        self._results, self._gt, self._ran = {}, {}, 0

    @torch.no_grad()
    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Decode the batch's validation output into official result rows (global frame), kept per sample token."""
        if not self._due:
            return
        from datasets.evaluation import detections_to_results

        if not isinstance(outputs, dict) or "output" not in outputs:
            raise TypeError("DetectionValidation needs validation_step to return {'loss': ..., 'output': "
                            "DetectorOutput} (GateFusionModule does)")
        detections = pl_module.detector.head.decode(outputs["output"])
        self._results.update(detections_to_results(detections, batch.meta))
        self._gt.update({m.sample_token: int(len(g.boxes)) for m, g in zip(batch.meta, batch.gt)})
        self._ran += len(batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gather every rank's rows, score them on rank 0, broadcast, log the same numbers on every rank."""
        if not self._due:
            return
        parts = [(self._results, self._gt, self._ran)]
        if trainer.world_size > 1:
            parts = [None] * trainer.world_size
            torch.distributed.all_gather_object(parts, (self._results, self._gt, self._ran))
        self._results, self._gt = {}, {}
        score = self._score(trainer, pl_module, parts) if trainer.is_global_zero else None
        self.last = score = trainer.strategy.broadcast(score, src=0)
        batch_size = max(score.frames, 1)
        pl_module.log("val_nds", score.nds, sync_dist=True, batch_size=batch_size)
        pl_module.log("val_map", score.map, sync_dist=True, batch_size=batch_size)
        pl_module.log("val/nds_frames", float(score.frames), sync_dist=True, batch_size=batch_size)

    def _score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, parts: list) -> ValidationScore:
        """DetectionEval of the union of the ranks' rows (rank 0). NaN, with a warning naming the split, where its
        frames hold no annotation (a test split, or annotations missing)."""
        from datasets.evaluation import official_eval, write_results

        results, gt = {}, {}
        for rows, boxes, _ in parts:
            results.update(rows)
            gt.update(boxes)
        per_rank = [ran for _, _, ran in parts]
        dm = trainer.datamodule.hparams
        if not results:
            return ValidationScore(float("nan"), float("nan"), 0, per_rank)
        if sum(gt.values()) == 0:
            warnings.warn(f"DetectionValidation: the {len(results)} validation frames of split {dm.val_split!r} "
                          f"({dm.dataroot}, {dm.version}) hold no annotated box: val_nds and val_map are NaN (a "
                          f"test split has no annotations; validate on a split that has)")
            return ValidationScore(float("nan"), float("nan"), len(results), per_rank)
        if self._nusc is None or self._nusc.dataroot != str(dm.dataroot) or self._nusc.version != dm.version:
            from nuscenes import NuScenes
            self._nusc = NuScenes(version=dm.version, dataroot=str(dm.dataroot), verbose=False)
        static = pl_module.static
        with tempfile.TemporaryDirectory(prefix="gatefusion-val-") as tmp:
            path = write_results(Path(tmp) / "results.json", results,
                                 {s: getattr(static, s) != "off" for s in SENSORS})
            overall = official_eval(self._nusc, path, dm.val_split, Path(tmp) / "devkit")["overall"]
        return ValidationScore(float(overall["nds"]), float(overall["map"]), len(results), per_rank)
