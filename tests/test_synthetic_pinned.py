"""The synthetic world is pinned: the same seed gives the same bytes on one machine (for any number of workers),
and the tiny preset's files match a stored per-file fingerprint on any CPU.

Why a fingerprint and not one hash of every byte: the generator computes in float64 with numpy's exp/sin/cos and
matrix products, whose last bits depend on the CPU's SIMD path (numpy's AVX-512 functions, OpenBLAS's kernels).
Measured by emulating those last-bit differences (every exp/sin/cos/arctan2 result 1-4 ULP off) and by switching
OpenBLAS kernels: counts, integers, tokens and strings never change; the JSON tables' floats (ego poses, sensor
mounts, boxes) move by up to 5e-13; LiDAR files differ only in the sign of zeros; one camera image in 250 gets one
8x8 block 1 level off. So each file's fingerprint is (layout, sum): `layout` hashes everything exact in it (counts,
image size, rings, radar integer fields, the tables without their floats, the map's bytes), and `sum` is a weighted
sum of its float values (points, pixels, table floats), compared within a tolerance per kind that is far above that
noise and far below any change the generator makes on purpose (a point moved 1 cm, a 16-pixel patch 10 levels off).

A deliberate change of the world rewrites the stored fingerprint (`python -m tests.test_synthetic_pinned`, from the
repository root) and reruns the three-seed benches whose figures the README quotes
(bench/static_configs.py --seeds 0 1 2 on a regenerated demo world).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.synthetic import PRESETS, RADAR_DTYPE, generate

FINGERPRINT = Path(__file__).with_name("synthetic_tiny_fingerprint.json")
TOLERANCE = {"lidar": 1e-3, "radar": 1e-3, "camera": 1000.0, "table": 1e-6, "file": 0.0}  # on the weighted sum
RADAR_FLOATS = [name for name in RADAR_DTYPE.names if RADAR_DTYPE[name].kind == "f"]


def _tree_hash(root: Path) -> str:
    """Hash of every generated file (the loader's index cache, if a test put one there, is not generator output)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".gatefusion_cache" not in p.relative_to(root).parts:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _kind(path: Path) -> str:
    """Which fingerprint a file gets, by its name."""
    name = path.name
    return ("lidar" if name.endswith(".pcd.bin") else "radar" if name.endswith(".pcd") else
            "camera" if name.endswith(".jpg") else "table" if name.endswith(".json") else "file")


def _blank_floats(tree, floats: list[float]):
    """A parsed JSON document with every float replaced by None; the floats go to `floats` in document order."""
    if isinstance(tree, dict):
        return {k: _blank_floats(v, floats) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_blank_floats(v, floats) for v in tree]
    if isinstance(tree, float):
        floats.append(tree)
        return None
    return tree


def _exact_and_floats(path: Path) -> tuple[bytes, np.ndarray]:
    """A file split into what must match exactly (bytes) and its float values (flat float64)."""
    kind = _kind(path)
    if kind == "lidar":
        points = np.fromfile(path, np.float32).reshape(-1, 5)  # x y z intensity ring
        return str(len(points)).encode() + points[:, 4].astype(np.uint8).tobytes(), points[:, :4].ravel()
    if kind == "radar":
        head, body = path.read_bytes().split(b"DATA binary\n")
        n = int(head.split(b"\nPOINTS ")[1].split(b"\n")[0])
        points = np.frombuffer(body[:n * RADAR_DTYPE.itemsize], RADAR_DTYPE)
        ints = [name for name in RADAR_DTYPE.names if name not in RADAR_FLOATS]
        return head + points[ints].tobytes(), np.stack([points[f] for f in RADAR_FLOATS], 1).ravel()
    if kind == "camera":
        with Image.open(path) as im:
            pixels = np.asarray(im)
        return str(pixels.shape).encode(), pixels.ravel()
    if kind == "table":
        floats: list[float] = []
        layout = _blank_floats(json.loads(path.read_text()), floats)
        return json.dumps(layout).encode(), np.array(floats)
    return path.read_bytes(), np.zeros(0)


def fingerprint_file(path: Path) -> list:
    """[layout, sum] of one file: the first 16 hex digits of the SHA-256 of its exact part, and the sum of its float
    values (NaN as 0: an empty radar cloud is one NaN point) weighted by fixed pseudo-random weights in [0.5, 1.5],
    so that a changed, moved or reordered value moves the sum."""
    exact, floats = _exact_and_floats(path)
    weights = np.random.default_rng(0).uniform(0.5, 1.5, len(floats))
    return [hashlib.sha256(exact).hexdigest()[:16], float(weights @ np.nan_to_num(floats.astype(np.float64)))]


def fingerprint(root: Path) -> dict[str, list]:
    """Relative path -> [layout, sum] of every generated file under a dataroot (not the loader's index cache)."""
    return {str(p.relative_to(root)): fingerprint_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and ".gatefusion_cache" not in p.relative_to(root).parts}


def mismatches(expected: dict[str, list], actual: dict[str, list]) -> list[str]:
    """One line per file that is missing, extra, or differs from `expected` (layout, or sum beyond its tolerance)."""
    out = [f"missing {p}" for p in sorted(set(expected) - set(actual))]
    out += [f"unexpected {p}" for p in sorted(set(actual) - set(expected))]
    for p in sorted(set(expected) & set(actual)):
        (layout, total), (layout2, total2) = expected[p], actual[p]
        if layout != layout2:
            out.append(f"{p}: exact part (counts, sizes, integers, tokens) changed: {layout} -> {layout2}")
        elif not abs(total - total2) <= TOLERANCE[_kind(Path(p))]:
            out.append(f"{p}: weighted sum of its values {total!r} -> {total2!r}")
    return out


def test_tiny_world_matches_its_fingerprint(tiny_world):
    problems = mismatches(json.loads(FINGERPRINT.read_text()), fingerprint(tiny_world))
    assert not problems, f"{len(problems)} files differ from {FINGERPRINT.name}:\n" + "\n".join(problems[:20])


def _points(path: Path, edit) -> None:
    """Edit a LiDAR file's (N, 5) float32 points in place."""
    points = np.fromfile(path, np.float32).reshape(-1, 5)
    edit(points)
    points.tofile(path)


def _pixels(path: Path, edit) -> None:
    """Edit an image's (H, W, 3) pixels in place, stored losslessly (PNG bytes under the .jpg name) so that the
    fingerprint sees exactly the edit and no re-encoding."""
    with Image.open(path) as im:
        pixels = np.asarray(im, np.int16).copy()
    edit(pixels)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, format="PNG")


def _radar_x(path: Path) -> None:
    """The first radar point's x (float32) 1 cm further."""
    raw = bytearray(path.read_bytes())
    at = raw.index(b"DATA binary\n") + len(b"DATA binary\n")
    raw[at:at + 4] = (np.frombuffer(raw[at:at + 4], np.float32) + np.float32(0.01)).tobytes()
    path.write_bytes(bytes(raw))


def _rows(path: Path, edit) -> None:
    """Edit a table's rows in place, written as the generator writes them."""
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows, indent=0))


def _nudge_translations(rows: list[dict]) -> None:
    for r in rows:
        r["translation"] = [t * (1 + 4e-16) for t in r["translation"]]


def _flip_zero_signs(points: np.ndarray) -> None:
    points[points == 0] = -0.0


def _last_bit(points: np.ndarray) -> None:
    points[::97, :3] = np.nextafter(points[::97, :3], np.float32(np.inf))


LIDAR, CAMERA, RADAR = "samples/LIDAR_TOP/", "samples/CAM_FRONT/", "samples/RADAR_FRONT/"
BOXES, FAULTS = "v1.0-synth/sample_annotation.json", "v1.0-synth/synthetic_faults.json"
CHANGES = {  # what: (file (a folder: its first file), change of a copy, whether the fingerprint must fail)
    "lidar point 1 cm": (LIDAR, lambda f: _points(f, lambda p: p.__setitem__((7, 0), p[7, 0] + 0.01)), True),
    "lidar point dropped": (LIDAR, lambda f: f.write_bytes(f.read_bytes()[:-20]), True),
    "lidar ring": (LIDAR, lambda f: _points(f, lambda p: p.__setitem__((7, 4), (p[7, 4] + 1) % 32)), True),
    "radar x 1 cm": (RADAR, _radar_x, True),
    "camera 16x16 patch 10 levels": (CAMERA, lambda f: _pixels(f, lambda a: a.__setitem__(
        (slice(50, 66), slice(90, 106)), a[50:66, 90:106] + 10)), True),
    "box 0.1 mm": (BOXES, lambda f: _rows(f, lambda r: r[3]["translation"].__setitem__(
        0, r[3]["translation"][0] + 1e-4)), True),
    "box point count": (BOXES, lambda f: _rows(f, lambda r: r[3].__setitem__("num_lidar_pts", 1 + r[3][
        "num_lidar_pts"])), True),
    "fault list": (FAULTS, lambda f: f.write_text(f.read_text().replace("lidar", "radar", 1)), True),
    "lidar signed zeros": (LIDAR, lambda f: _points(f, _flip_zero_signs), False),
    "lidar last bits": (LIDAR, lambda f: _points(f, _last_bit), False),
    "camera 8x8 block 1 level": (CAMERA, lambda f: _pixels(f, lambda a: a.__setitem__(
        (slice(40, 48), slice(80, 88)), a[40:48, 80:88] + 1)), False),
    "tables last bits": (BOXES, lambda f: _rows(f, _nudge_translations), False),
}


@pytest.fixture(scope="module")
def tiny_fingerprint(tiny_world) -> dict[str, list]:
    return fingerprint(tiny_world)


@pytest.mark.parametrize("what", CHANGES)
def test_fingerprint_fails_on_a_change_and_holds_on_last_bit_noise(what, tiny_world, tiny_fingerprint, tmp_path):
    """A changed value, count or integer fails naming its file; what another SIMD path does (signed zeros, last
    bits, an 8x8 block of an image 1 level off) passes."""
    where, change, fails = CHANGES[what]
    rel = where if not where.endswith("/") else next(
        p for p, (_, total) in tiny_fingerprint.items() if p.startswith(where) and total != 0.0)
    copy = tmp_path / Path(rel).name
    copy.write_bytes((tiny_world / rel).read_bytes())
    change(copy)
    problems = mismatches(tiny_fingerprint, {**tiny_fingerprint, rel: fingerprint_file(copy)})
    assert bool(problems) == fails and all(p.startswith(f"{rel}: ") for p in problems), problems


def test_fingerprint_names_missing_and_extra_files(tiny_fingerprint):
    some = next(iter(tiny_fingerprint))
    rest = {k: v for k, v in tiny_fingerprint.items() if k != some}
    assert mismatches(tiny_fingerprint, rest) == [f"missing {some}"]
    assert mismatches(rest, tiny_fingerprint) == [f"unexpected {some}"]


def test_deterministic_by_seed(tiny_world, tmp_path):
    again = tmp_path / "again"
    generate(again, PRESETS["tiny"], workers=2)
    assert _tree_hash(again) == _tree_hash(tiny_world)
    other = tmp_path / "other"
    generate(other, replace(PRESETS["tiny"], seed=1))
    assert _tree_hash(other) != _tree_hash(tiny_world)
    assert mismatches(fingerprint(tiny_world), fingerprint(other))


def write_fingerprint() -> None:
    """Generate the tiny world afresh and store its fingerprint (after a deliberate change of the world)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "world", PRESETS["tiny"], workers=1)
        rows = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fingerprint(Path(tmp) / "world").items()]
    FINGERPRINT.write_text("{\n" + ",\n".join(rows) + "\n}\n")
    print(f"wrote {FINGERPRINT}", file=sys.stderr)


if __name__ == "__main__":
    write_fingerprint()
