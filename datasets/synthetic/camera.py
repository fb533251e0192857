"""The six cameras: nuScenes mounting with intrinsics scaled to the image size, rendered with PIL (painter's
algorithm) over a textured road and a sky with a horizon, class-specific colours and decals, lit by day, dusk or
night (beyond ~12 m an object shows only by its lights at night), washed out by rain and fog, with sensor noise;
faults black out a camera or occlude part of its lens."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from datasets.synthetic.world import CYCLES, VEHICLES, Objects, Scenery, boxes_in_frame
from sensors.geometry import box_corners, invert, quaternion_to_matrix, yaw_to_quaternion
from sensors.names import ATTRIBUTES, CLASSES

# Mounting close to real nuScenes: channel -> (translation in ego, yaw in degrees, focal length at 1600x900).
CAMERA_MOUNTS = {
    "CAM_FRONT": ((1.70, 0.02, 1.51), 0.0, 1266.0),
    "CAM_FRONT_RIGHT": ((1.55, -0.49, 1.50), -55.0, 1260.0),
    "CAM_BACK_RIGHT": ((1.04, -0.48, 1.56), -110.0, 1260.0),
    "CAM_BACK": ((0.03, 0.0, 1.57), 180.0, 809.0),
    "CAM_BACK_LEFT": ((1.04, 0.48, 1.56), 110.0, 1260.0),
    "CAM_FRONT_LEFT": ((1.52, 0.49, 1.51), 55.0, 1260.0),
}
CAM_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # ego_R_cam at yaw 0

LIGHT = {"day": 1.0, "dusk": 0.5, "night": 0.12}
TINT = {"day": np.array([1.0, 1.0, 1.0]), "dusk": np.array([1.0, 0.82, 0.68]), "night": np.array([0.85, 0.9, 1.1])}
SKY = {"day": (np.array([120, 170, 235]), np.array([200, 220, 240])),
       "dusk": (np.array([70, 60, 110]), np.array([235, 140, 80])),
       "night": (np.array([5, 6, 15]), np.array([20, 22, 35]))}
NOISE_SIGMA = {"day": 2.0, "dusk": 6.0, "night": 10.0}
FOG_DISTANCE = {"clear": 800.0, "rain": 140.0, "fog": 22.0}
WEATHER_CONTRAST = {"clear": 1.0, "rain": 0.85, "fog": 0.7}  # scale of the deviations from the image mean
OCCLUDER_COLOUR = (55, 42, 30)  # mud on the lens of an "occluded" camera
SUN = np.array([0.3, 0.5, 0.81])
# Side faces as (bottom a, bottom b, top b, top a) corner indices of box_corners; u runs a -> b, v bottom -> top.
FACES = {"front": (0, 3, 7, 4), "back": (2, 1, 5, 6), "left": (1, 0, 4, 5), "right": (3, 2, 6, 7),
         "top": (5, 4, 7, 6)}
FACE_NORMALS = {"front": (1, 0, 0), "back": (-1, 0, 0), "left": (0, 1, 0), "right": (0, -1, 0), "top": (0, 0, 1)}


def class_patterns(name: str, attribute: int, rng_colour: np.ndarray):
    """Class-specific decals (of a CLASSES name or a SCENERY kind): list of (faces, (u0, u1, v0, v1), colour, emissive).
    Vehicles' head and tail lights are emissive (seen at night) unless the vehicle is parked."""
    dark = (35, 45, 55)
    sides = ("front", "back", "left", "right")
    p = []
    if name in ("car", "bus"):
        p.append((sides, (0.08, 0.92, 0.55, 0.88), dark, False))
    if name == "truck":
        p.append((("front", "left", "right"), (0.0, 0.25, 0.55, 0.85), dark, False))
        p.append((("left", "right"), (0.3, 1.0, 0.1, 0.25), (90, 90, 95), False))
    if name == "trailer":
        p.append((("left", "right"), (0.0, 1.0, 0.35, 0.42), (240, 240, 240), False))
    if name == "construction_vehicle":
        for i in range(0, 8, 2):
            p.append((sides, (i / 8, (i + 1) / 8, 0.0, 0.35), (20, 20, 20), False))
        p.append((sides, (0.1, 0.5, 0.6, 0.9), dark, False))
    lit = attribute != ATTRIBUTES.index("vehicle.parked")  # a parked vehicle's lights are off: dark at night
    head, tail = ((255, 250, 215), (230, 20, 20)) if lit else ((170, 170, 160), (120, 25, 25))
    if name in VEHICLES and name != "trailer":
        p.append((("front",), (0.05, 0.2, 0.25, 0.35), head, lit))
        p.append((("front",), (0.8, 0.95, 0.25, 0.35), head, lit))
    if name in VEHICLES:
        p.append((("back",), (0.05, 0.2, 0.25, 0.35), tail, lit))
        p.append((("back",), (0.8, 0.95, 0.25, 0.35), tail, lit))
    if name == "pedestrian":
        p.append((sides, (0.0, 1.0, 0.0, 0.45), (40, 40, 80), False))
        p.append((sides, (0.0, 1.0, 0.45, 0.82), tuple(int(x) for x in rng_colour), False))
        p.append((sides, (0.25, 0.75, 0.82, 1.0), (225, 185, 150), False))
    if name in CYCLES:
        p.append((("left", "right"), (0.0, 0.35, 0.0, 0.45), (15, 15, 15), False))
        p.append((("left", "right"), (0.65, 1.0, 0.0, 0.45), (15, 15, 15), False))
        if attribute == ATTRIBUTES.index("cycle.with_rider"):
            p.append((sides, (0.3, 0.7, 0.55, 1.0), (200, 170, 60), False))
        if name == "motorcycle":
            p.append((("front",), (0.3, 0.7, 0.5, 0.6), (255, 250, 215), True))
    if name == "traffic_cone":
        p.append((sides, (0.0, 1.0, 0.45, 0.65), (245, 245, 245), False))
        p.append((sides, (0.0, 1.0, 0.0, 0.08), (30, 30, 30), False))
    if name == "barrier":
        for i in range(0, 6, 2):
            p.append((sides, (i / 6, (i + 1) / 6, 0.3, 1.0), (245, 245, 245), False))
    # scenery (SCENERY): leaves, a bin's lid, a sign on a post, a lamp on a pole, a wall's coping
    if name == "hedge":
        p.append((sides + ("top",), (0.0, 1.0, 0.55, 1.0), (40, 85, 35), False))
    if name == "bin":
        p.append((sides, (0.0, 1.0, 0.85, 1.0), (30, 30, 30), False))
    if name == "post":
        p.append((sides, (0.0, 1.0, 0.75, 1.0), (30, 80, 170), False))
    if name == "pole":
        p.append((sides, (0.0, 1.0, 0.93, 1.0), (200, 200, 170), False))
    if name == "wall":
        p.append((sides, (0.0, 1.0, 0.85, 1.0), (110, 105, 100), False))
    return p


@dataclass
class Camera:
    """One camera: channel, ego_T_cam (4, 4), intrinsics K (3, 3), the unit ray of every pixel, and a cache of the
    static background terms per (lighting, weather) and of its noise field."""

    channel: str
    ego_T_cam: np.ndarray
    K: np.ndarray
    rays_ego: np.ndarray  # (H, W, 3) unit rays of every pixel in ego axes
    cache: dict = field(default_factory=dict)


def make_camera(channel: str, image_size: tuple[int, int]) -> Camera:
    (tx, ty, tz), yaw_deg, f = CAMERA_MOUNTS[channel]
    W, H = image_size
    K = np.array([[f * W / 1600, 0, W / 2], [0, f * H / 900, H / 2], [0, 0, 1.0]])
    R = quaternion_to_matrix(yaw_to_quaternion(np.deg2rad(yaw_deg))) @ CAM_AXES
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, (tx, ty, tz)
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    return Camera(channel, T, K, d @ R.T)


def _background_terms(cam: Camera, lighting: str, weather: str, fog_colour: np.ndarray):
    """Static parts of a camera's background: ground points (H, W, 2) in ego xy, and per-pixel scale and offset
    (H, W, 3) so that background = road_texture[..., None] * scale + offset (sky: scale 0)."""
    light, tint = LIGHT[lighting], TINT[lighting]
    cam_pos = cam.ego_T_cam[:3, 3]
    d = cam.rays_ego
    dz = d[..., 2]
    ground = dz < -1e-4
    t = np.where(ground, -cam_pos[2] / np.where(ground, dz, -1.0), 1e4)
    pe = cam_pos + d * np.where(ground, t, 0.0)[..., None]
    illum = np.full(dz.shape, light)
    if lighting != "day":
        ang = np.arctan2(pe[..., 1], pe[..., 0])
        head = 0.85 * np.exp(-t / 18.0) * np.exp(-(ang / 0.45) ** 2) * (pe[..., 0] > 0)
        illum = light + (1 - light) * np.maximum(head, 0.25 * np.exp(-t / 6.0))
    a = np.exp(-t / FOG_DISTANCE[weather])[..., None]
    scale = a * illum[..., None] * tint * np.array([1.0, 1.0, 1.03])
    top, horizon = SKY[lighting]
    e = np.clip(dz, 0, 1)[..., None] ** 0.5
    sky = (1 - e) * horizon + e * top
    if weather != "clear":
        k = 0.85 if weather == "fog" else 0.45
        sky = (1 - k) * sky + k * fog_colour
    g = ground[..., None]
    return (pe[..., :2].astype(np.float32), np.where(g, scale, 0.0).astype(np.float32),
            np.where(g, (1 - a) * fog_colour, sky).astype(np.float32))


def _clip_near(poly: np.ndarray, near: float = 0.2) -> np.ndarray:
    """Sutherland-Hodgman clip of a (P, 3) camera-frame polygon against z >= near."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out)



@dataclass
class CameraScene:
    """What the cameras of one scene see over the road: the objects (their boxes come per frame), the scenery
    (global boxes, drawn and lit like the objects; None: none) and the scene's lighting and weather."""

    objects: Objects
    lighting: str
    weather: str
    scenery: Scenery | None = None


@dataclass
class _Canvas:
    """One camera image while its bodies are drawn: the PIL drawing, the camera and its cam_T_ego, and how the frame
    is lit: ambient light and tint of the lighting, fog distance and colour, and whether the camera faces forward
    (where headlights reach)."""

    draw: ImageDraw.ImageDraw
    cam: Camera
    cam_T_ego: np.ndarray
    lighting: str
    light: float
    tint: np.ndarray
    fog_d: float
    fog_colour: np.ndarray
    front: bool


def render_camera(rng: np.random.Generator, cam: Camera, scene: CameraScene, global_T_ego: np.ndarray,
                  boxes_e: np.ndarray, fault: str | None) -> np.ndarray:
    """(H, W, 3) uint8 image of the scene from one camera. boxes_e: (K, 9) boxes of scene.objects in the ego frame;
    fault: None, "black" or "occluded"."""
    H, W = cam.rays_ego.shape[:2]
    if fault == "black":
        return np.zeros((H, W, 3), np.uint8)
    lighting, weather, objects, scenery = scene.lighting, scene.weather, scene.objects, scene.scenery
    light, tint = LIGHT[lighting], TINT[lighting]
    fog_colour = np.array([175.0, 175.0, 180.0]) * max(light, 0.1) * tint
    front = abs(math.degrees(math.atan2(cam.ego_T_cam[1, 2], cam.ego_T_cam[0, 2]))) < 60
    image = Image.fromarray(_background(cam, global_T_ego, lighting, weather, fog_colour))
    draw = ImageDraw.Draw(image)
    canvas = _Canvas(draw, cam, invert(cam.ego_T_cam), lighting, light, tint, FOG_DISTANCE[weather], fog_colour, front)
    looks = [(CLASSES[c], int(a), col) for c, a, col in zip(objects.cls, objects.attribute, objects.colour)]
    if scenery is not None and len(scenery.kind):
        boxes_e = np.concatenate([boxes_e, boxes_in_frame(scenery.boxes, invert(global_T_ego))])
        looks += [(kind, -1, col) for kind, col in zip(scenery.kind, scenery.colour)]
    # Bodies far to near (painter's algorithm).
    corners_e = box_corners(boxes_e[:, :7])  # (K, 8, 3)
    corners_c = corners_e @ canvas.cam_T_ego[:3, :3].T + canvas.cam_T_ego[:3, 3]
    dist = np.linalg.norm(boxes_e[:, :3] - cam.ego_T_cam[:3, 3], axis=1)
    for k in np.argsort(-dist):
        _draw_body(canvas, corners_c[k], boxes_e[k, 6], dist[k], looks[k])
    if weather == "rain":
        for _ in range(W * H // 400):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            draw.line([(x, y), (x - 1.5, y + 6)], fill=tuple(int(c) for c in fog_colour * 1.1), width=1)
    if fault == "occluded":
        for _ in range(int(rng.integers(1, 4))):
            cx, cy_ = rng.uniform(0, W), rng.uniform(0, H)
            rx, ry = rng.uniform(0.25, 0.5) * W, rng.uniform(0.3, 0.6) * H
            draw.ellipse([cx - rx, cy_ - ry, cx + rx, cy_ + ry], fill=OCCLUDER_COLOUR)
    return _sensor_response(rng, cam, np.asarray(image, dtype=np.float32), lighting, weather)


def _background(cam: Camera, global_T_ego: np.ndarray, lighting: str, weather: str,
                fog_colour: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 background: the textured road below the horizon, the sky gradient above (static terms cached
    per camera and condition)."""
    key = (lighting, weather)
    if key not in cam.cache:
        cam.cache[key] = _background_terms(cam, lighting, weather, fog_colour)
    pe_xy, scale, offset = cam.cache[key]
    pg = pe_xy @ global_T_ego[:2, :2].T.astype(np.float32) + global_T_ego[:2, 3].astype(np.float32)
    tile = (np.floor(pg[..., 0] / 4.0) + np.floor(pg[..., 1] / 4.0)) % 2
    base = 92.0 + 12.0 * tile + 6.0 * np.sin(pg[..., 0] * 0.7) * np.sin(pg[..., 1] * 0.9)
    img = base[..., None] * scale + offset
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_body(canvas: _Canvas, cc: np.ndarray, yaw: float, dist: float, look: tuple) -> None:
    """Draw one box (object or scenery) whose 8 corners in the camera frame are cc (8, 3), `dist` m from the camera,
    look = (CLASSES name or SCENERY kind, attribute index or -1, body colour (3,)): its faces towards the camera far
    to near, each as the body colour and its decals, shaded by the sun, lit and fogged. Skipped when behind the
    camera, beyond 150 m or outside the image."""
    cam = canvas.cam
    H, W = cam.rays_ego.shape[:2]
    if np.all(cc[:, 2] < 0.2) or dist > 150:
        return
    front_pts = cc[cc[:, 2] >= 0.2]
    u = front_pts[:, 0] / front_pts[:, 2] * cam.K[0, 0] + cam.K[0, 2]
    v = front_pts[:, 1] / front_pts[:, 2] * cam.K[1, 1] + cam.K[1, 2]
    if np.all(cc[:, 2] >= 0.2) and (u.max() < 0 or u.min() > W or v.max() < 0 or v.min() > H):
        return
    name, attribute, colour = look
    cy, sy = math.cos(yaw), math.sin(yaw)
    obj_light = light = canvas.light
    if canvas.lighting != "day":
        near = math.exp(-dist / 12.0) * (1.0 if canvas.front else 0.6)
        obj_light = light + (1 - light) * near
    fog_a = math.exp(-dist / canvas.fog_d)
    decals = class_patterns(name, attribute, colour[::-1] * 0.5 + 80)
    faces = []
    for fname, idx in FACES.items():
        nl = FACE_NORMALS[fname]
        n_e = np.array([cy * nl[0] - sy * nl[1], sy * nl[0] + cy * nl[1], nl[2]])
        centre_c = cc[list(idx)].mean(0)
        n_c = canvas.cam_T_ego[:3, :3] @ n_e
        if n_c @ centre_c >= 0:
            continue
        faces.append((np.linalg.norm(centre_c), fname, idx, n_e))
    for _, fname, idx, n_e in sorted(faces, key=lambda f: -f[0]):
        shade = 0.6 + 0.4 * max(0.0, float(n_e @ SUN))
        quads = [((0.0, 1.0, 0.0, 1.0), colour, False)]
        quads += [(reg, col, emi) for fs, reg, col, emi in decals if fname in fs]
        colours = np.array([q[1] for q in quads], dtype=np.float64)
        emissive = np.array([q[2] for q in quads])[:, None]
        colours = np.where(emissive, colours, colours * shade * obj_light * canvas.tint)
        colours = np.clip(fog_a * colours + (1 - fog_a) * canvas.fog_colour, 0, 255).astype(int).tolist()
        _fill_quads(canvas, _face_quads(cc[list(idx)], [q[0] for q in quads]), colours)


def _face_quads(corners: np.ndarray, regions: list[tuple]) -> np.ndarray:
    """A face's corners (4, 3) (a0, b0, b1, a1, camera frame) and Q regions (u0, u1, v0, v1) in face coordinates
    -> (Q, 4, 3) corners of each region, bilinearly interpolated."""
    reg = np.array(regions)  # (Q, 4) u0, u1, v0, v1
    uu = reg[:, [0, 1, 1, 0]]
    vv = reg[:, [2, 2, 3, 3]]
    weights = np.stack([(1 - vv) * (1 - uu), (1 - vv) * uu, vv * uu, vv * (1 - uu)], -1)  # (Q, 4, 4)
    return weights @ corners


def _fill_quads(canvas: _Canvas, polys: np.ndarray, colours: list) -> None:
    """Project (Q, 4, 3) camera-frame quads into the image and fill them in order, clipping them at the near plane
    when any corner of the face lies behind it."""
    cam = canvas.cam
    clipped = bool((polys[..., 2] < 0.2).any())
    z = np.maximum(polys[..., 2], 0.2)
    pu = (polys[..., 0] / z * cam.K[0, 0] + cam.K[0, 2]).tolist()
    pv = (polys[..., 1] / z * cam.K[1, 1] + cam.K[1, 2]).tolist()
    for q in range(len(polys)):
        if clipped:
            poly = _clip_near(polys[q])
            if len(poly) < 3:
                continue
            xy = list(zip((poly[:, 0] / poly[:, 2] * cam.K[0, 0] + cam.K[0, 2]).tolist(),
                          (poly[:, 1] / poly[:, 2] * cam.K[1, 1] + cam.K[1, 2]).tolist()))
        else:
            xy = list(zip(pu[q], pv[q]))
        canvas.draw.polygon(xy, fill=tuple(colours[q]))


def _sensor_response(rng: np.random.Generator, cam: Camera, out: np.ndarray, lighting: str,
                     weather: str) -> np.ndarray:
    """The drawn (H, W, 3) float32 image as the sensor records it: contrast lost in rain and fog, noise growing in
    the dark (a window of one cached noise field per camera, at a random offset), rounded to uint8."""
    if weather in ("rain", "fog"):
        out = out.mean() + WEATHER_CONTRAST[weather] * (out - out.mean())
    if "noise" not in cam.cache:
        cam.cache["noise"] = rng.standard_normal(out.size + 4099, dtype=np.float32)
    start = int(rng.integers(4099))
    out = out + cam.cache["noise"][start:start + out.size].reshape(out.shape) * NOISE_SIGMA[lighting]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
