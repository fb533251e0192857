"""Train gatefusion with LightningCLI: `python train.py fit --config configs/demo.yaml`.

The constructor signatures of fusion.module.GateFusionModule and datasets.datamodule.NuScenesDataModule are the
configuration schema (`--print_config` shows it). `trainer.default_root_dir` is the run folder and the one setting
that moves a run (each config names runs/<name>; `--trainer.default_root_dir R` moves it to R): the resolved
config.yaml, TensorBoard events, csv/metrics.csv and checkpoints/ (last.ckpt + best) all go there, because a config
that sets no `trainer.logger` gets two loggers rooted there (GateFusionCLI) and a ModelCheckpoint without dirpath
saves into <first logger's log_dir>/checkpoints. A config that sets `trainer.logger` keeps its own loggers.
Resume an interrupted run with `python train.py fit --config <same config> --ckpt_path last`: global_step,
optimizer and schedule continue from last.ckpt, and the loggers have a fixed version, so the run continues the
same logs (ResumableCSVLogger appends to metrics.csv instead of deleting it). To start a run afresh, delete its
folder.
A gated model's checkpoints then get the gate's operating points (`operating_points`: the budgets; the price of each
and the gate's offsets, measured on training frames: fusion/operating_points.py), so that `eval.py --budget` needs
no training data.
"""
from __future__ import annotations

import csv
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment

from datasets.datamodule import NuScenesDataModule
from fusion.module import GateFusionModule
from fusion.operating_points import BUDGETS, store_for_run


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


def run_loggers(root: str) -> list[Logger]:
    """The loggers of a run in folder `root`: TensorBoard events in root itself (first, so that trainer.log_dir is
    root, where config.yaml goes, and checkpoints go to root/checkpoints) and root/csv/metrics.csv."""
    return [TensorBoardLogger(root, name="", version=""), ResumableCSVLogger(root, name="", version="csv")]


class GateFusionCLI(LightningCLI):
    """LightningCLI whose `trainer.default_root_dir` moves the whole run: where it is set and `trainer.logger` is
    not (null, or true: Lightning's default logger), the trainer gets run_loggers(default_root_dir). Lightning's own
    default would log to default_root_dir/lightning_logs/version_N, a new folder on every resume."""

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("default_root_dir") and config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = run_loggers(str(config["default_root_dir"]))
        return super().instantiate_trainer(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--operating_points", type=list[float], default=list(BUDGETS),
                            help="budgets whose gate operating points are stored in the checkpoints after fitting "
                                 "(gated models; [] for none)")

    def after_fit(self) -> None:
        """Store the gate's operating points in the run's checkpoint files (rank 0, a finished gated run)."""
        budgets = self._get(self.config, "operating_points")
        if not budgets or self.model.gate is None or self.trainer.interrupted or not self.trainer.is_global_zero:
            return
        paths = [p for cb in self.trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path)]
        device = self.trainer.strategy.root_device
        store_for_run(paths, budgets, device="cuda" if device.type == "cuda" else "cpu")


def main(args: list[str] | None = None, run: bool = True) -> LightningCLI:
    """Run the CLI on `args` (default: sys.argv[1:]); returns the CLI (its .trainer and .model) for tests.
    run=False only builds model, data and trainer (args then name no subcommand)."""
    return GateFusionCLI(GateFusionModule, NuScenesDataModule, args=args, run=run, seed_everything_default=0,
                         save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
