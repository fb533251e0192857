"""Loading a gatefusion checkpoint with errors that name the file (missing, corrupt, not gatefusion's, from another
version), and the checksum that ties an evaluation's metrics to the weights that gave them."""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

import torch


def known_hyperparameters() -> set[str] | None:
    """Names GateFusionModule accepts: its constructor's, plus build_detector's when it takes **kwargs (passed on to
    build_detector by name); None when that set cannot be told from the signatures."""
    import inspect

    from fusion.detector import build_detector
    from fusion.module import GateFusionModule

    names: set[str] = set()
    for fn in (GateFusionModule.__init__, build_detector):
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if all(p.kind is not p.VAR_KEYWORD for p in params):
            return names
    return None


def _few(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_checkpoint(path: str | Path, map_location="cpu"):
    """A GateFusionModule from a Lightning checkpoint (weights_only loading), and the data settings it was trained
    with. Raises ValueError naming the file when it is missing, corrupt, not a gatefusion checkpoint (its weights
    are not all under "detector.") or from another version (hyperparameters the module does not know, weights
    that do not fit the module they describe). Every other error while building the module propagates: it is a
    bug, not a bad file."""
    from fusion.module import GateFusionModule

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"checkpoint {path}: cannot be read as a torch checkpoint ({type(e).__name__}: {e})") from None
    needed = ("state_dict", "hyper_parameters", "pytorch-lightning_version")
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in needed) or not isinstance(ckpt["state_dict"], dict):
        raise ValueError(f"checkpoint {path}: not a Lightning checkpoint (no {' / '.join(needed)})")
    weights, hparams = ckpt["state_dict"], dict(ckpt["hyper_parameters"] or {})
    foreign = [k for k in weights if not k.startswith(("detector.", "gate."))]
    if not weights or foreign:
        raise ValueError(f"checkpoint {path}: not a gatefusion checkpoint (a GateFusionModule's weights are all under "
                         f"'detector.' and 'gate.'; this one has {_few(foreign) if foreign else 'no weights'})")
    known = known_hyperparameters()
    unknown = [k for k in hparams if not k.startswith("_") and known is not None and k not in known]
    if unknown:
        raise ValueError(f"checkpoint {path}: a gatefusion checkpoint from another version: unknown hyperparameters "
                         f"{_few(unknown, 6)}")
    try:
        model = GateFusionModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except RuntimeError as e:
        if "Error(s) in loading state_dict" not in str(e):
            raise
        expected = GateFusionModule(**{k: v for k, v in hparams.items() if not k.startswith("_")}).state_dict()
        missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
        shape = [k for k in expected.keys() & weights.keys() if expected[k].shape != weights[k].shape]
        what = [f"{name} {_few(keys)}" for name, keys in (("missing", missing), ("unexpected", unexpected),
                                                          ("wrong shape", shape)) if keys]
        raise ValueError(f"checkpoint {path}: a gatefusion checkpoint from another version: missing/unexpected "
                         f"weights: {'; '.join(what) or e}") from None
    return model, dict(ckpt.get("datamodule_hyper_parameters") or {})


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: which weights gave a metrics.json, whatever the checkpoint was later renamed to."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- the run
