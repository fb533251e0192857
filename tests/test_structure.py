"""The structure the code promises: the layer map (imports point down only) and one declaration of the detector's
hyperparameters.

LAYERS below is the one place where the layers are written down. Each module of the repository belongs to the
layer of its longest matching prefix and may import modules of its own layer and of the layers it names; the test
reads every import with the AST, imports inside functions included.
"""
from __future__ import annotations

import ast
import inspect
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROJECT = ("sensors", "fusion", "datasets", "report", "train", "eval", "visualize", "bench", "experiments")
TORCH = ("torch", "pytorch_lightning", "lightning", "einops", "torchmetrics")

# (layer, its modules: a module or a package prefix, the layers it may import besides its own, torch allowed?)
LAYERS = (
    ("names and geometry", ("sensors.names", "sensors.geometry"), (), False),
    ("frame types", ("sensors.frame",), ("names and geometry",), True),
    ("corruptions", ("sensors.corruptions",), ("names and geometry", "frame types"), True),
    ("grid and blocks", ("sensors.bev", "sensors.points"), ("names and geometry", "frame types"), True),
    ("encoders", ("sensors.camera", "sensors.lidar", "sensors.radar"),
     ("names and geometry", "frame types", "grid and blocks"), True),
    ("model", ("fusion.head", "fusion.detector", "fusion.cost", "fusion.gate"),
     ("names and geometry", "frame types", "grid and blocks", "encoders"), True),
    ("lightning", ("fusion.module",), ("names and geometry", "frame types", "grid and blocks", "encoders", "model"),
     True),
    # the data package sits beside the model: it reads files into frame types and scores detections, and neither
    # it nor the model imports the other
    ("data", ("datasets",), ("names and geometry", "frame types", "corruptions"), True),
    ("world generator", ("datasets.synthetic",), ("names and geometry",), False),
    # drawing what a run did (matplotlib, open3d, HTML) is not data: it reads runs and frames, and only entry
    # points draw
    ("report", ("report",), ("names and geometry", "frame types", "data"), True),
    # checkpoint loading (fusion/checkpoint.py), one evaluation run (fusion/evaluate.py), the gate's operating points
    # (fusion/operating_points.py), scoring, and the export of a checkpoint's graphs (fusion/export.py); only entry
    # points run them
    ("evaluation", ("fusion.checkpoint", "fusion.evaluate", "fusion.operating_points", "fusion.export"),
     ("names and geometry", "frame types", "corruptions", "grid and blocks", "encoders", "model", "lightning", "data"),
     True),
    # NDS during training (fusion/validation.py): a Lightning callback, built from a config's trainer.callbacks, that
    # scores the validation forward's detections with the data package's evaluation
    ("validation", ("fusion.validation",), ("names and geometry", "frame types", "lightning", "data"), True),
    ("entry points", ("train", "eval", "visualize", "bench", "experiments"),
     ("names and geometry", "frame types", "grid and blocks", "encoders", "model", "lightning", "data",
      "world generator", "corruptions", "report", "evaluation"), True),
)
PACKAGE_INITS = ("sensors", "fusion", "datasets", "report")  # empty __init__ files: importing a package costs nothing


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> tuple[str, tuple[str, ...], bool]:
    best = None
    for name, prefixes, allowed, torch_ok in LAYERS:
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
                best = (len(p), name, allowed, torch_ok)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_structure.py LAYERS: add it where it belongs")
    return best[1], best[2], best[3]


def imports_of(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every module named by an import statement of the source (relative imports resolved), at any depth."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def project_files() -> list[Path]:
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True).stdout.split()
    files = {REPO / f for f in tracked} | {p for d in PROJECT for p in (REPO / d).rglob("*.py")}
    return sorted(p for p in files if p.is_file() and p.relative_to(REPO).parts[0] in {f"{d}.py" for d in PROJECT}
                  | set(PROJECT))


def sources() -> dict[str, tuple[str, bool]]:
    """module name -> (its source, is it a package __init__); the empty top-level package inits are left out
    (test_package_inits_import_nothing)."""
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in project_files()
            if module_name(p) not in PACKAGE_INITS}


def violations(code: dict[str, tuple[str, bool]]) -> list[str]:
    """'a imports b' for every import that the layer map forbids."""
    out = []
    for me, (source, is_package) in sorted(code.items()):
        layer, allowed, torch_ok = layer_of(me)
        for imp in sorted(imports_of(me, source, is_package)):
            if imp.split(".")[0] in TORCH and not torch_ok:
                out.append(f"{me} ({layer}) imports {imp}: this layer runs without torch")
            if imp not in code or imp == me:
                continue
            their = layer_of(imp)[0]
            if their != layer and their not in allowed:
                out.append(f"{me} ({layer}) imports {imp} ({their})")
    return out


def test_every_import_points_down_the_layer_map():
    code = sources()
    assert {"sensors.names", "sensors.frame", "fusion.module", "datasets.nuscenes", "train", "eval"} <= set(code)
    assert violations(code) == []


def entry_point_violations(code: dict[str, tuple[str, bool]]) -> list[str]:
    """'a imports b' for every entry point (a module of the entry points layer with a `__main__` block: train,
    eval, visualize, each bench and experiment) that imports another one; the benches share code through modules
    without a command line (bench/common.py, bench/frame_oracle.py)."""
    def is_entry(module: str) -> bool:
        return layer_of(module)[0] == "entry points" and "__name__ == \"__main__\"" in code[module][0]

    return [f"{me} imports {imp}" for me in sorted(code) if is_entry(me)
            for imp in sorted(imports_of(me, *code[me])) if imp in code and imp != me and is_entry(imp)]


def test_entry_points_do_not_import_each_other():
    code = sources()
    entries = [m for m in code if layer_of(m)[0] == "entry points" and "__name__ == \"__main__\"" in code[m][0]]
    assert {"train", "eval", "visualize", "bench.pareto", "bench.oracle"} <= set(entries)
    assert entry_point_violations(code) == []
    # negative case: a bench driving eval.py, and eval.py importing train
    code["bench.pareto"] = (code["bench.pareto"][0] + "\n\ndef _late():\n    import eval\n", False)
    code["eval"] = (code["eval"][0] + "\nfrom train import main\n", False)
    assert entry_point_violations(code) == ["bench.pareto imports eval", "eval imports train"]


def test_the_layer_check_catches_an_import_pointing_up():
    """Negative case: the grid module importing the detector inside a function, and torch imported by the
    torch-free bottom layer, are both reported."""
    code = sources()
    bev, _ = code["sensors.bev"]
    code["sensors.bev"] = (bev + "\n\ndef _late():\n    from fusion.detector import FusionDetector\n", False)
    code["sensors.names"] = (code["sensors.names"][0] + "\nimport torch\n", False)
    found = violations(code)
    assert "sensors.bev (grid and blocks) imports fusion.detector (model)" in found, found
    assert "sensors.names (names and geometry) imports torch: this layer runs without torch" in found, found
    assert len(found) == 2, found


def test_project_import_graph_has_no_cycle():
    code = sources()
    graph = {m: {i for i in imports_of(m, src, pkg) if i in code and i != m} for m, (src, pkg) in code.items()}
    state: dict[str, int] = {}

    def visit(m, trail):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join(trail + [m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("package", PACKAGE_INITS)
def test_package_inits_import_nothing(package):
    assert not imports_of(package, (REPO / package / "__init__.py").read_text(), True)


def test_detector_hyperparameters_are_declared_once_and_passed_by_name():
    """build_detector's signature is the one declaration: GateFusionModule takes them as **detector, and every one
    of them reaches the part it configures, whatever its position."""
    from fusion.detector import build_detector
    from fusion.module import GateFusionModule

    module_params = inspect.signature(GateFusionModule.__init__).parameters
    detector_params = inspect.signature(build_detector).parameters
    assert not set(module_params) & (set(detector_params) - {"self"})
    assert inspect.Parameter.VAR_KEYWORD in {p.kind for p in module_params.values()}
    m = GateFusionModule(bev_cell=3.2, camera_width=4, camera_channels=8, camera_heights=2, camera_bev_factor=1,
                         camera_depth_bins=5, lidar_channels=12, radar_channels=4, radar_points=77, fusion_channels=16,
                         bev_channels=20, head_channels=8, direction_weight=0.3, lidar_coarse_points=1000)
    d = m.detector
    assert (d.camera.channels, d.camera.heights, d.camera.depth_bins) == (8, 2, 5)
    assert (d.lidar.channels, d.radar.channels, d.radar.max_points, d.fusion.channels) == (12, 4, 77, 16)
    assert d.decoder.channels == 20 and d.head.shared[0].out_channels == 8 and d.head.weights[3] == 0.3
    assert d.lidar.modes["coarse"].max_points == 1000 and d.grid.cell == 3.2
    assert m.hparams["lidar_channels"] == 12 and "detector" not in m.hparams  # stored flat, as the YAML keys
    with pytest.raises(TypeError, match="unexpected keyword argument 'lidar_chanels'"):
        GateFusionModule(lidar_chanels=8)
