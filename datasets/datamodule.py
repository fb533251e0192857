"""LightningDataModule over NuScenesDataset: train (augmented, seeded per item) / val / test / predict loaders
that collate Frames into `sensors.frame.Batch`. Constructor arguments are the LightningCLI schema and are saved
as hyperparameters (eval.py reads them back from checkpoints).

train_corruptions / train_corruption_prob: with that probability per training frame, one of the named corruptions
of sensors/corruptions.py at a random severity before the global augmentation (datasets.augment.CorruptionAugment);
off by default. bench/robustness.py marks the corruptions a checkpoint saw in training.

val_frames: validation (val_loss, and val_nds / val_map with fusion/validation.py's callback) runs on this many frames
of `val_split`, evenly spread over it and the same at every validation, so that a large split (nuScenes val: 6,019
frames) can be validated often; None validates the whole split. test and predict always run the whole split."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from datasets.augment import Chain, CorruptionAugment, GlobalAugment, SeededSampler
from datasets.nuscenes import NuScenesDataset
from sensors.frame import collate
from sensors.names import IMAGE_SIZE


class NuScenesDataModule(pl.LightningDataModule):
    """Train on `train_split`, validate/test/predict on `val_split` of a nuScenes-format dataroot."""

    def __init__(self, dataroot: str, version: str = "v1.0-synth", train_split: str = "synth_train",
                 val_split: str = "synth_val", batch_size: int = 4, num_workers: int = 2, lidar_sweeps: int = 3,
                 radar_sweeps: int = 3, image_size: tuple[int, int] = IMAGE_SIZE, augment: bool = True,
                 cache_dir: str | None = None, seed: int = 0, train_corruptions: list[str] | None = None,
                 train_corruption_prob: float = 0.0, val_frames: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        try:
            self.corruptions = CorruptionAugment(tuple(train_corruptions or ()), float(train_corruption_prob))
        except ValueError as e:
            raise ValueError(f"NuScenesDataModule train_corruptions / train_corruption_prob: {e}") from None
        if val_frames is not None and val_frames < 1:
            raise ValueError(f"NuScenesDataModule val_frames must be >= 1 (or None: the whole split), got {val_frames}")
        self.train_set: NuScenesDataset | None = None
        self.val_set: NuScenesDataset | None = None

    def _dataset(self, split: str, augment: bool) -> NuScenesDataset:
        h = self.hparams
        corrupt = augment and self.corruptions.probability > 0
        return NuScenesDataset(
            h.dataroot, h.version, split, lidar_sweeps=h.lidar_sweeps, radar_sweeps=h.radar_sweeps,
            image_size=tuple(h.image_size), cache_dir=h.cache_dir,
            augment=(Chain((self.corruptions, GlobalAugment())) if corrupt else GlobalAugment()) if augment else None,
            seed=h.seed, index_workers=max(1, h.num_workers), stale_readings=corrupt and self.corruptions.needs_stale,
        )

    def prepare_data(self) -> None:
        """Build the index caches once, in one process (before DDP ranks read them)."""
        h = self.hparams
        for split in {h.train_split, h.val_split}:
            NuScenesDataset(h.dataroot, h.version, split, h.lidar_sweeps, h.radar_sweeps, tuple(h.image_size),
                            h.cache_dir, index_workers=max(1, h.num_workers))

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._dataset(self.hparams.train_split, self.hparams.augment)
        if self.val_set is None:
            self.val_set = self._dataset(self.hparams.val_split, False)

    def _loader(self, dataset: Dataset, sampler=None, shuffle: bool = False) -> DataLoader:
        h = self.hparams
        generator = torch.Generator().manual_seed(h.seed) if shuffle else None
        return DataLoader(
            dataset, batch_size=h.batch_size, sampler=sampler, shuffle=shuffle if sampler is None else None,
            generator=generator, num_workers=h.num_workers, collate_fn=collate,
            persistent_workers=h.num_workers > 0, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, sampler=SeededSampler(len(self.train_set), self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        """The val_frames frames of val_split (all without val_frames), evenly spread: frame i * len / val_frames."""
        if self.val_set is None:
            self.setup("validate")
        n, frames = len(self.val_set), self.hparams.val_frames
        if frames is None or frames >= n:
            return self._loader(self.val_set)
        return self._loader(Subset(self.val_set, [i * n // frames for i in range(frames)]))

    def _whole_val_split(self) -> DataLoader:
        if self.val_set is None:
            self.setup("test")
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._whole_val_split()

    def predict_dataloader(self) -> DataLoader:
        return self._whole_val_split()
