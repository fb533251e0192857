"""Train gatefusion with LightningCLI: `python train.py fit --config configs/demo.yaml`.

The constructor signatures of fusion.module.GateFusionModule and datasets.datamodule.NuScenesDataModule are the
configuration schema (`--print_config` shows it). Each config gives its run its own folder (runs/<name>): the
resolved config.yaml, TensorBoard events, csv/metrics.csv and checkpoints/ (last.ckpt + best) all go there.
Resume an interrupted run with `python train.py fit --config <same config> --ckpt_path last`: global_step,
optimizer and schedule continue from last.ckpt, and the loggers have a fixed version, so the run continues the
same logs (ResumableCSVLogger appends to metrics.csv instead of deleting it). To start a run afresh, delete its
folder.
"""
from __future__ import annotations

import csv

from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from datasets.datamodule import NuScenesDataModule
from fusion.module import GateFusionModule


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (and its columns) instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resumed run: new rows are appended."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI on `args` (default: sys.argv[1:]); returns the CLI (its .trainer and .model) for tests."""
    return LightningCLI(GateFusionModule, NuScenesDataModule, args=args, seed_everything_default=0,
                        save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
