"""Train gatefusion with LightningCLI: `python train.py fit --config configs/demo.yaml`.

The constructor signatures of fusion.module.GateFusionModule and datasets.datamodule.NuScenesDataModule are the
configuration schema (`--print_config` shows it). Each config gives its run its own folder (runs/<name>): the
resolved config.yaml, TensorBoard events, csv/metrics.csv and checkpoints/ (last.ckpt + best) all go there.
Resume an interrupted run with `python train.py fit --config <same config> --ckpt_path last`: the loggers have a
fixed version, so the resumed run continues the same logs, and global_step continues from last.ckpt.
"""
from __future__ import annotations

from pytorch_lightning.cli import LightningCLI

from datasets.datamodule import NuScenesDataModule
from fusion.module import GateFusionModule


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI on `args` (default: sys.argv[1:]); returns the CLI (its .trainer and .model) for tests."""
    return LightningCLI(GateFusionModule, NuScenesDataModule, args=args, seed_everything_default=0,
                        save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
