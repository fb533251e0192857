"""Seeded sensor corruptions (noise, weather, faults) of camera, LiDAR and radar: Frame -> Frame, after loading.

Every corruption is a function of (frame, its parameter at the chosen severity, a numpy Generator) and is applied to
a loaded Frame before collation, so that every model, static or gated, sees the same corrupted frame. The generator
is seeded from (sample token, corruption name, severity) through SHA-256 (`frame_rng`), never Python's hash(): the
same frame gets the same corruption in every process and run, and different frames get different ones.

Severities run from 1 to 5; the faults (a missing sensor, a stuck LiDAR) have none. A missing sensor is absent, as
a dead one is: `present` False and empty points (LiDAR, radar) or CameraData.valid False with the loader's empty
image and identity intrinsics (cameras), never a frame of plausible zeros marked present. Each corruption changes
only the sensor(s) it names (and their `present` entry); ground truth and metadata stay as loaded. Parameters and
their sources (nuScenes-C / ImageNet-C, Dong et al. 2023, MultiCorrupt, Robo3D) are in CORRUPTIONS and in the
README (section "Robustness under sensor noise and failure").

    frame = corrupt(frame, "lidar_beam_reduction", 3)       # or, as a dataset's augment hook:
    NuScenesDataset(..., augment=Corruption("camera_fog", 2), stale_readings=spec("camera_fog").needs_stale)
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sensors.frame import CameraData, Frame, unit_images
from sensors.names import SENSORS

SEVERITIES = (1, 2, 3, 4, 5)
GROUPS = ("camera", "lidar", "radar", "cross-sensor")


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption: its group (GROUPS), the sensors it changes (SENSORS names), its parameter per severity 1..5
    (None: a fault without severity), fn(frame, parameter, rng) -> frame, where the parameters come from, and
    whether it needs the loader's stale readings (NuScenesDataset(stale_readings=True))."""

    name: str
    group: str
    sensors: tuple[str, ...]
    params: tuple | None
    fn: Callable
    source: str
    needs_stale: bool = False

    @property
    def has_severity(self) -> bool:
        return self.params is not None


def frame_rng(token: str, name: str, severity: int | None) -> np.random.Generator:
    """numpy Generator seeded by SHA-256 of (sample token, corruption, severity): stable across processes."""
    digest = hashlib.sha256(f"{token}\x00{name}\x00{severity}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


# ----------------------------------------------------------------------------------------------- helpers

def _randn(rng: np.random.Generator, shape, scale: float = 1.0) -> Tensor:
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32) * np.float32(scale))


def _with_images(frame: Frame, images: Tensor) -> Frame:
    """The frame with new images on its valid cameras (a missing camera keeps its empty image)."""
    valid = frame.camera.valid.bool()[:, None, None, None]
    images = torch.where(valid, images.clamp(0.0, 1.0), frame.camera.images)
    return replace(frame, camera=replace(frame.camera, images=images))


def _smooth_noise(rng: np.random.Generator, n: int, hw: tuple[int, int], octaves: int, decay: float) -> Tensor:
    """(n, 1, H, W) fractal noise in [0, 1]: random grids of 2, 4, .. 2^octaves cells upsampled bilinearly, the
    amplitude divided by `decay` per octave (ImageNet-C's plasma fractal in spirit)."""
    out, amp = torch.zeros(n, 1, *hw), 1.0
    for k in range(1, octaves + 1):
        grid = _randn(rng, (n, 1, 2 ** k, 2 ** k))
        out += amp * F.interpolate(grid, size=hw, mode="bilinear", align_corners=False)
        amp /= decay
    lo, hi = out.amin((2, 3), keepdim=True), out.amax((2, 3), keepdim=True)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


def _rigid_error(rng: np.random.Generator, rot_sigma: float, trans_sigma: float) -> Tensor:
    """(4, 4) float32 rigid transform: rotation about x, y, z by N(0, rot_sigma) rad each, translation N(0, t)."""
    a, b, c = rng.normal(0.0, rot_sigma, 3)
    Rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    Ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    Rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ Rx
    T[:3, 3] = rng.normal(0.0, trans_sigma, 3)
    return torch.from_numpy(T).float()


def _set_present(frame: Frame, sensor: str, value: bool) -> Tensor:
    present = frame.present.clone()
    present[SENSORS.index(sensor)] = value
    return present


def _lidar(frame: Frame, points: Tensor, ring: Tensor | None) -> Frame:
    return replace(frame, lidar=replace(frame.lidar, points=points.contiguous(), ring=ring,
                                        batch_index=torch.zeros(len(points), dtype=torch.long)))


def _keep_lidar(frame: Frame, keep: np.ndarray) -> Frame:
    keep = torch.from_numpy(np.asarray(keep, dtype=bool))
    ring = frame.lidar.ring[keep] if frame.lidar.ring is not None else None
    return _lidar(frame, frame.lidar.points[keep], ring)


def _radar(frame: Frame, points: Tensor) -> Frame:
    return replace(frame, radar=replace(frame.radar, points=points.contiguous(),
                                        batch_index=torch.zeros(len(points), dtype=torch.long)))


# ----------------------------------------------------------------------------------------------- camera

def camera_noise(frame: Frame, sigma: float, rng) -> Frame:
    """Additive Gaussian noise of std `sigma` on [0, 1] pixel values (ImageNet-C gaussian_noise)."""
    images = frame.camera.images
    return _with_images(frame, images + _randn(rng, images.shape, sigma))


def camera_motion_blur(frame: Frame, sigma: float, rng) -> Frame:
    """Motion blur: each camera's image averaged along a line at a random angle in [-45, 45] deg with Gaussian
    weights of std `sigma` px at ImageNet-C's 224 px, scaled here to the image width (sigma * W / 224); one FFT
    convolution per image on a border-replicated copy."""
    images = frame.camera.images
    n, _, H, W = images.shape
    s = sigma * W / 224.0
    half = math.ceil(2 * s)
    t = np.linspace(-half, half, 8 * half + 1)
    weights = np.exp(-0.5 * (t / s) ** 2)
    angle = rng.uniform(-45.0, 45.0, n)
    padded = F.pad(images, (half + 1,) * 4, mode="replicate")
    Hp, Wp = padded.shape[-2:]
    kernel = np.zeros((n, Hp, Wp))
    for i, a in enumerate(np.deg2rad(angle)):
        x, y = t * math.cos(a), t * math.sin(a)
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):  # bilinear splat of the line samples, wrapped around
            w = weights * (1 - np.abs(x - x0 - dx)) * (1 - np.abs(y - y0 - dy))
            np.add.at(kernel[i], ((y0 + dy) % Hp, (x0 + dx) % Wp), w)
    kernel /= kernel.sum((1, 2), keepdims=True)
    spectrum = torch.fft.rfft2(torch.from_numpy(kernel).float())[:, None]
    out = torch.fft.irfft2(torch.fft.rfft2(padded) * spectrum, s=(Hp, Wp))
    return _with_images(frame, out[..., half + 1:half + 1 + H, half + 1:half + 1 + W])


def camera_dark(frame: Frame, gain: float, rng) -> Frame:
    """Low light: the exposure scaled by `gain`, with the photon (shot) noise of an 8-bit sensor at that exposure
    and read noise of 2 levels (nuScenes-C's "dark": dimmer image plus sensor noise; the gains are ours)."""
    photons = frame.camera.images.double().numpy() * 255.0 * gain
    dark = rng.poisson(photons) + rng.normal(0.0, 2.0, photons.shape)
    return _with_images(frame, torch.from_numpy(dark / 255.0).float())


def camera_overexposure(frame: Frame, shift: float, rng) -> Frame:
    """Over-exposure: HSV value raised by `shift` and clipped, hue and saturation kept (ImageNet-C brightness)."""
    images = frame.camera.images
    v = images.amax(1, keepdim=True)
    ratio = (v + shift).clamp(max=1.0) / v.clamp_min(1e-6)
    return _with_images(frame, torch.where(v > 0, images * ratio, torch.full_like(images, shift)))


def camera_fog(frame: Frame, param: tuple[float, float], rng) -> Frame:
    """Fog: x + c * haze, rescaled by max / (max + c) (ImageNet-C fog, param (c, wibble decay)); the haze is
    0.6 + 0.4 x the fractal, a steadier veil than ImageNet-C's bare fractal, whose random dense and clear patches
    made the harm of one frame swing more between seeds than between severities."""
    c, decay = param
    images = frame.camera.images
    haze = 0.6 + 0.4 * _smooth_noise(rng, len(images), images.shape[-2:], 8, decay)
    top = images.amax((1, 2, 3), keepdim=True)
    return _with_images(frame, (images + c * haze) * top / (top + c))


def camera_occlusion(frame: Frame, share: float, rng) -> Frame:
    """Lens soiling: on each camera a blotchy mud mask (low-frequency fractal noise above its 1 - share quantile,
    soft-edged) covering about `share` of the image, painted dark brown at 95% opacity."""
    images = frame.camera.images
    noise = _smooth_noise(rng, len(images), images.shape[-2:], 4, 1.6)
    level = torch.quantile(noise.flatten(1), 1.0 - share, dim=1)[:, None, None, None]
    mask = ((noise - level) / 0.05).clamp(0.0, 1.0) * 0.95
    mud = torch.tensor([0.25, 0.18, 0.1])[None, :, None, None]
    return _with_images(frame, images * (1 - mask) + mud * mask)


def _drop_cameras(frame: Frame, drop: Tensor) -> Frame:
    """Cameras `drop` (N_cam,) bool as the loader leaves an unreadable one: empty image, identity intrinsics,
    valid False; the camera rig is present while any camera is valid."""
    cam = frame.camera
    valid = cam.valid.bool() & ~drop
    images = torch.where(drop[:, None, None, None], torch.zeros_like(cam.images), cam.images)
    intrinsics = torch.where(drop[:, None, None], torch.eye(3).expand_as(cam.intrinsics), cam.intrinsics)
    camera = replace(cam, images=images, intrinsics=intrinsics, valid=valid)
    return replace(frame, camera=camera, present=_set_present(frame, "camera", bool(valid.any())))


def camera_missing_one(frame: Frame, _, rng) -> Frame:
    """One camera, chosen at random among the valid ones, is dead."""
    valid = np.flatnonzero(frame.camera.valid.numpy())
    drop = torch.zeros(len(frame.camera.valid), dtype=torch.bool)
    if len(valid):
        drop[int(rng.choice(valid))] = True
    return _drop_cameras(frame, drop)


def camera_missing_all(frame: Frame, _, rng) -> Frame:
    """Every camera is dead: the camera rig is not present."""
    return _drop_cameras(frame, torch.ones(len(frame.camera.valid), dtype=torch.bool))


def _misplace_cameras(frame: Frame, param: tuple[float, float], rng) -> CameraData:
    rot, trans = param
    errors = torch.stack([_rigid_error(rng, rot, trans) for _ in range(len(frame.camera.ego_T_cam))])
    return replace(frame.camera, ego_T_cam=frame.camera.ego_T_cam @ errors)


def camera_extrinsic(frame: Frame, param: tuple[float, float], rng) -> Frame:
    """Calibration error: each camera's ego_T_cam, the pose the model projects with, is off by its own small rigid
    motion in the camera frame (rotation N(0, rot) rad per axis, translation N(0, trans) m); the images are those
    of the true pose (Dong et al.'s spatial misalignment parameters, applied to the cameras only)."""
    return replace(frame, camera=_misplace_cameras(frame, param, rng))


# ----------------------------------------------------------------------------------------------- LiDAR

def lidar_point_drop(frame: Frame, share: float, rng) -> Frame:
    """Each point dropped with probability `share` (MultiCorrupt points reducing, Dong et al. density)."""
    return _keep_lidar(frame, rng.random(len(frame.lidar.points)) >= share)


def beam_order(n: int) -> np.ndarray:
    """The n ring indices in bit-reversed (van der Corput) order: any first m of them are spread evenly over the
    rings (m = n/2: every other ring, n/4: every fourth ...), and a smaller m keeps a subset of a larger one's."""
    bits = max(1, math.ceil(math.log2(max(n, 2))))
    rev = [int(f"{r:0{bits}b}"[::-1], 2) for r in range(2 ** bits)]
    return np.asarray([r for r in rev if r < n], dtype=np.int64)


def lidar_beam_reduction(frame: Frame, fraction: float, rng) -> Frame:
    """Only m = round(fraction * n) of the LiDAR's n beams are kept, the first m of beam_order(n) (n: the largest
    ring index in the frame + 1, read from the data; 32 -> 16/8/4 beams keeps every 2nd/4th/8th ring, as
    MultiCorrupt); points of unknown ring (-1) are kept with probability m / n."""
    ring = frame.lidar.ring
    if ring is None:
        raise ValueError("lidar_beam_reduction needs LidarData.ring (the ring index per point, loaded by "
                         "datasets.nuscenes.NuScenesDataset)")
    ring = ring.numpy()
    n = int(ring.max()) + 1 if len(ring) and ring.max() >= 0 else 0
    if n == 0:
        return _keep_lidar(frame, rng.random(len(ring)) < fraction)
    m = max(1, round(n * fraction))
    kept = beam_order(n)[:m]
    return _keep_lidar(frame, np.where(ring >= 0, np.isin(ring, kept), rng.random(len(ring)) < m / n))


def lidar_fov(frame: Frame, half_angle: float, rng) -> Frame:
    """Field of view limited to +-half_angle degrees about the forward axis (Dong et al. FOV lost)."""
    p = frame.lidar.points.numpy()
    azimuth = np.degrees(np.arctan2(p[:, 1], p[:, 0]))
    return _keep_lidar(frame, np.abs(azimuth) <= half_angle)


def lidar_fog(frame: Frame, alpha: float, rng) -> Frame:
    """Fog scatter (a simplified form of Hahner et al.'s fog model, Dong et al.'s attenuation alpha in 1/m): a
    return from range r survives with the two-way transmission exp(-2 alpha r), its intensity scaled by it; a lost
    return comes back from the fog itself, at a uniform fraction of its range (at least 1.5 m), faint."""
    p = frame.lidar.points.clone()
    r = p[:, :3].norm(dim=1).numpy()
    t = np.exp(-2.0 * alpha * r)
    lost = rng.random(len(p)) > t
    scale = np.where(lost, np.maximum(rng.random(len(p)), 1.5 / np.maximum(r, 1.5)), 1.0)
    p[:, :3] *= torch.from_numpy(scale).float()[:, None]
    p[:, 3] *= torch.from_numpy(np.where(lost, 0.1 * t, t)).float()
    return _lidar(frame, p, frame.lidar.ring)


def lidar_jitter(frame: Frame, sigma: float, rng) -> Frame:
    """Gaussian position noise of std `sigma` m on x, y, z (Dong et al. Gaussian noise (L))."""
    p = frame.lidar.points.clone()
    p[:, :3] += _randn(rng, (len(p), 3), sigma)
    return _lidar(frame, p, frame.lidar.ring)


def lidar_crosstalk(frame: Frame, share: float, rng) -> Frame:
    """Crosstalk: a share of the points displaced by N(0, 3 m) per axis (Dong et al. crosstalk)."""
    p = frame.lidar.points.clone()
    hit = torch.from_numpy(rng.random(len(p)) < share)
    p[hit, :3] += _randn(rng, (int(hit.sum()), 3), 3.0)
    return _lidar(frame, p, frame.lidar.ring)


def lidar_missing(frame: Frame, _, rng) -> Frame:
    """The LiDAR is dead: not present, no points."""
    out = _lidar(frame, frame.lidar.points[:0], frame.lidar.ring[:0] if frame.lidar.ring is not None else None)
    return replace(out, present=_set_present(frame, "lidar", False))


def _stale_lidar(frame: Frame) -> Frame:
    stale = frame.lidar.stale
    if stale is None:  # a scene's first key frame has no earlier reading: it stays current
        return frame
    return replace(_lidar(frame, stale.clone(), torch.full((len(stale),), -1, dtype=torch.long)),
                   present=_set_present(frame, "lidar", True))


def lidar_stuck(frame: Frame, _, rng) -> Frame:
    """The LiDAR repeats its previous output: the previous key frame's points (0.5 s older in nuScenes) in that
    frame's own ego frame, delivered as current (needs the loader's stale readings; rings unknown, -1)."""
    return _stale_lidar(frame)


# ----------------------------------------------------------------------------------------------- radar

def radar_dropout(frame: Frame, share: float, rng) -> Frame:
    """Each radar point dropped with probability `share`."""
    keep = torch.from_numpy(rng.random(len(frame.radar.points)) >= share)
    return _radar(frame, frame.radar.points[keep])


def radar_ghosts(frame: Frame, ratio: float, rng) -> Frame:
    """Ghost and clutter points, ratio x max(M, 20) of them added to the M real ones: half multipath ghosts (a real
    point pushed out to 1.3-2x its range, same velocity, 5 dB weaker), half static clutter (uniform azimuth, range
    2-60 m, 0.5 m high, rcs N(-5, 5) dBsm, compensated velocity N(0, 0.3) m/s)."""
    real = frame.radar.points
    n = int(round(ratio * max(len(real), 20)))
    n_ghost = n // 2 if len(real) else 0
    ghosts = real[torch.from_numpy(rng.integers(0, max(len(real), 1), n_ghost))].clone()
    ghosts[:, :2] *= torch.from_numpy(rng.uniform(1.3, 2.0, (n_ghost, 1))).float()
    ghosts[:, 3] -= 5.0
    k = n - n_ghost
    az, r = rng.uniform(-np.pi, np.pi, k), rng.uniform(2.0, 60.0, k)
    clutter = np.stack([r * np.cos(az), r * np.sin(az), np.full(k, 0.5), rng.normal(-5.0, 5.0, k),
                        rng.normal(0.0, 0.3, k), rng.normal(0.0, 0.3, k), np.zeros(k)], 1)
    return _radar(frame, torch.cat([real, ghosts, torch.from_numpy(clutter).float()]))


def radar_velocity_noise(frame: Frame, sigma: float, rng) -> Frame:
    """Gaussian noise of std `sigma` m/s on the compensated velocity (vx, vy) of every radar point."""
    p = frame.radar.points.clone()
    p[:, 4:6] += _randn(rng, (len(p), 2), sigma)
    return _radar(frame, p)


def radar_missing(frame: Frame, _, rng) -> Frame:
    """Every radar is dead: not present, no points."""
    return replace(_radar(frame, frame.radar.points[:0]), present=_set_present(frame, "radar", False))


# ----------------------------------------------------------------------------------------------- across sensors

def spatial_misalignment(frame: Frame, param: tuple[float, float], rng) -> Frame:
    """Extrinsic errors of every sensor, each its own: the LiDAR points and the radar points (positions and
    velocities) moved by a small rigid motion about the ego origin, each camera's ego_T_cam as camera_extrinsic
    (rotation N(0, rot) rad per axis, translation N(0, trans) m; Dong et al. spatial misalignment)."""
    rot, trans = param
    camera = _misplace_cameras(frame, param, rng)
    El, Er = _rigid_error(rng, rot, trans), _rigid_error(rng, rot, trans)
    lidar = frame.lidar.points.clone()
    lidar[:, :3] = lidar[:, :3] @ El[:3, :3].T + El[:3, 3]
    radar = frame.radar.points.clone()
    radar[:, :3] = radar[:, :3] @ Er[:3, :3].T + Er[:3, 3]
    radar[:, 4:6] = radar[:, 4:6] @ Er[:2, :2].T
    out = _radar(_lidar(frame, lidar, frame.lidar.ring), radar)
    return replace(out, camera=camera)


def temporal_misalignment(frame: Frame, probability: float, rng) -> Frame:
    """With the given probability per frame, the LiDAR and the radars (one clock) deliver the previous key frame's
    reading (0.5 s old) while the cameras are current (MultiCorrupt temporal misalignment, LiDAR and radar)."""
    if rng.random() >= probability:
        return frame
    out = _stale_lidar(frame)
    if frame.radar.stale is not None:
        out = replace(_radar(out, frame.radar.stale.clone()), present=_set_present(out, "radar", True))
    return out


# ----------------------------------------------------------------------------------------------- the suite

IMAGENET_C = "ImageNet-C (Hendrycks & Dietterich 2019), on which nuScenes-C (Xie et al. 2023) builds"
DONG = "Dong et al. 2023 (3D_Corruptions_AD)"
_DONG_POSE = tuple(zip((0.004, 0.008, 0.012, 0.016, 0.020), (0.04, 0.08, 0.12, 0.16, 0.20)))


def _spec(name, group, sensors, params, fn, source, needs_stale=False) -> tuple[str, CorruptionSpec]:
    return name, CorruptionSpec(name, group, sensors, params, fn, source, needs_stale)


CORRUPTIONS: dict[str, CorruptionSpec] = dict([
    _spec("camera_noise", "camera", ("camera",), (0.08, 0.12, 0.18, 0.26, 0.38), camera_noise,
          f"{IMAGENET_C}: gaussian_noise std"),
    _spec("camera_motion_blur", "camera", ("camera",), (3, 5, 8, 12, 15), camera_motion_blur,
          f"{IMAGENET_C}: motion_blur sigma at 224 px, scaled to the image width"),
    _spec("camera_dark", "camera", ("camera",), (0.5, 0.35, 0.25, 0.15, 0.08), camera_dark,
          "nuScenes-C 'dark' (dimmer + sensor noise); exposure gains ours"),
    _spec("camera_overexposure", "camera", ("camera",), (0.1, 0.2, 0.3, 0.4, 0.5), camera_overexposure,
          f"{IMAGENET_C}: brightness (HSV value shift)"),
    _spec("camera_fog", "camera", ("camera",), ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)),
          camera_fog, f"{IMAGENET_C}: fog (strength, wibble decay)"),
    _spec("camera_occlusion", "camera", ("camera",), (0.1, 0.2, 0.3, 0.4, 0.5), camera_occlusion,
          "lens soiling as in WoodScape (Uricar et al. 2021); covered shares ours"),
    _spec("camera_missing_one", "camera", ("camera",), None, camera_missing_one,
          "missing camera (MultiCorrupt), camera crash (nuScenes-C): one camera"),
    _spec("camera_missing_all", "camera", ("camera",), None, camera_missing_all, "all six cameras dead"),
    _spec("camera_extrinsic", "camera", ("camera",), _DONG_POSE, camera_extrinsic,
          f"{DONG}: spatial misalignment (rotation std rad, translation std m), cameras only"),
    _spec("lidar_point_drop", "lidar", ("lidar",), (0.2, 0.4, 0.6, 0.75, 0.9), lidar_point_drop,
          "MultiCorrupt points reducing (20/40/60%), 75/90% ours"),
    _spec("lidar_beam_reduction", "lidar", ("lidar",), (0.75, 0.5, 0.375, 0.25, 0.125), lidar_beam_reduction,
          "MultiCorrupt beams reducing (32 -> 16/8/4 beams = severities 2/4/5), 24 and 12 beams ours"),
    _spec("lidar_fov", "lidar", ("lidar",), (105, 90, 75, 60, 45), lidar_fov, f"{DONG}: FOV lost (+- degrees)"),
    _spec("lidar_fog", "lidar", ("lidar",), (0.005, 0.01, 0.02, 0.03, 0.06), lidar_fog,
          f"{DONG}: fog alpha (1/m); simplified Hahner et al. model"),
    _spec("lidar_jitter", "lidar", ("lidar",), (0.02, 0.04, 0.06, 0.08, 0.10), lidar_jitter,
          f"{DONG}: Gaussian noise (L) std (m)"),
    _spec("lidar_crosstalk", "lidar", ("lidar",), (0.004, 0.008, 0.012, 0.016, 0.020), lidar_crosstalk,
          f"{DONG}: crosstalk share of points (moved by N(0, 3 m))"),
    _spec("lidar_missing", "lidar", ("lidar",), None, lidar_missing,
          "LiDAR dead (not in MultiCorrupt, Robo3D, Dong et al.)"),
    _spec("lidar_stuck", "lidar", ("lidar",), None, lidar_stuck, "ours: LiDAR repeats its previous key frame",
          needs_stale=True),
    _spec("radar_dropout", "radar", ("radar",), (0.2, 0.4, 0.6, 0.75, 0.9), radar_dropout,
          "ours (no public radar suite), shares as lidar_point_drop"),
    _spec("radar_ghosts", "radar", ("radar",), (0.1, 0.25, 0.5, 1.0, 2.0), radar_ghosts,
          "ours: multipath ghosts + clutter, added points per real point"),
    _spec("radar_velocity_noise", "radar", ("radar",), (0.1, 0.2, 0.5, 1.0, 2.0), radar_velocity_noise,
          "ours: velocity noise std (m/s)"),
    _spec("radar_missing", "radar", ("radar",), None, radar_missing, "all five radars dead"),
    _spec("spatial_misalignment", "cross-sensor", SENSORS, _DONG_POSE, spatial_misalignment,
          f"{DONG}: spatial misalignment, each sensor its own error"),
    _spec("temporal_misalignment", "cross-sensor", ("lidar", "radar"), (0.2, 0.4, 0.6, 0.8, 1.0),
          temporal_misalignment, "MultiCorrupt temporal misalignment (share of frames 0.2/0.4/0.6), 0.8/1.0 ours",
          needs_stale=True),
])


def describe() -> str:
    """One line per corruption: name, group, sensors, severities or 'no severity'."""
    width = max(len(n) for n in CORRUPTIONS)
    return "\n".join(f"{s.name:<{width}}  {s.group:<12}  {'+'.join(s.sensors):<18}  "
                     f"{'severity 1-5' if s.has_severity else 'no severity'}" for s in CORRUPTIONS.values())


def spec(name: str, severity: int | None = None, check_severity: bool = False) -> CorruptionSpec:
    """The CorruptionSpec of `name`; ValueError listing the valid names, or (check_severity) the valid severities."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid corruptions: {', '.join(CORRUPTIONS)}")
    s = CORRUPTIONS[name]
    if check_severity:
        if s.has_severity and severity not in SEVERITIES:
            raise ValueError(f"corruption {name!r} needs a severity in {list(SEVERITIES)}, got {severity!r}")
        if not s.has_severity and severity is not None:
            raise ValueError(f"corruption {name!r} is a fault without severity; got severity {severity!r} "
                             f"(leave it out)")
    return s


def corrupt(frame: Frame, name: str, severity: int | None = None) -> Frame:
    """The frame under corruption `name` at `severity` (None for the faults), seeded by (token, name, severity).
    The input frame is not modified."""
    s = spec(name, severity, check_severity=True)
    param = s.params[severity - 1] if s.has_severity else None
    if "camera" in s.sensors:  # image arithmetic in float32 [0, 1]; the loader's frames carry uint8
        frame = replace(frame, camera=replace(frame.camera, images=unit_images(frame.camera.images)))
    return s.fn(frame, param, frame_rng(frame.meta.sample_token, name, severity))


class Corruption:
    """corrupt() as a dataset augment hook (frame, rng) -> frame; the given rng is ignored: the corruption seeds
    itself from the frame's sample token, so it does not depend on the item's index or the loader's workers."""

    def __init__(self, name: str, severity: int | None = None):
        self.spec = spec(name, severity, check_severity=True)
        self.name, self.severity = name, severity

    def __call__(self, frame: Frame, rng: np.random.Generator | None = None) -> Frame:
        return corrupt(frame, self.name, self.severity)

    def __repr__(self) -> str:
        return f"Corruption({self.name!r}, {self.severity!r})"
