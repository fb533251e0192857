"""The names every layer of gatefusion shares: detection classes and attributes (the devkit's detection names),
sensor types, sensor channels and the column layouts of points and boxes. No torch, no numpy: the world generator,
the loader and the model all read them from here."""

CLASSES = (
    "car", "truck", "construction_vehicle", "bus", "trailer",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
)
ATTRIBUTES = (
    "vehicle.moving", "vehicle.parked", "vehicle.stopped",
    "pedestrian.moving", "pedestrian.standing", "pedestrian.sitting_lying_down",
    "cycle.with_rider", "cycle.without_rider",
)
SENSORS = ("camera", "lidar", "radar")
# The modes each sensor branch can run in, per frame; index 0 is "off" (a decisions tensor holds these indices).
CAMERA_MODES = ("off", "low", "high")
LIDAR_MODES = ("off", "coarse", "fine")
RADAR_MODES = ("off", "on")
MODES = {"camera": CAMERA_MODES, "lidar": LIDAR_MODES, "radar": RADAR_MODES}
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
RADARS = ("RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT")
LIDAR = "LIDAR_TOP"

LIDAR_DIMS = ("x", "y", "z", "intensity", "time_lag")
RADAR_DIMS = ("x", "y", "z", "rcs", "vx", "vy", "time_lag")
BOX_DIMS = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")

# Evaluation labels parsed from a scene description (parse_conditions in datasets/): one lighting and one
# weather per scene. They group frames in the metrics and the pictures; the gate never sees them.
LIGHTINGS = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog")
CONDITIONS = LIGHTINGS + WEATHERS

# Camera images are resized to this (width, height) before the camera branch unless a config says otherwise.
IMAGE_SIZE = (320, 180)
