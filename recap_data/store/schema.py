"""Feature schemas: the LIBERO-shaped features, recap-data's outcome columns, schema comparison."""

# Columns LeRobot adds to every dataset itself; not part of a producer's schema.
LEROBOT_DEFAULT_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

# Outcomes live in the data as plain columns so that both DuckDB and LeRobotDataset see them.
# No "observation."/"action" prefix: LeRobot policies would take those as inputs/outputs.
# `success` is the episode's outcome, repeated on each of its frames.
OUTCOME_FEATURES = {
    "success": {"dtype": "bool", "shape": (1,), "names": None},
    "is_intervention": {"dtype": "bool", "shape": (1,), "names": None},
}
IMAGE_DTYPES = ("image", "video")
POLICY_PREFIXES = ("observation.", "action")

# LeRobot's LIBERO environment (lerobot/envs/libero.py) names, so rollouts share the schema.
AGENTVIEW_KEY = "observation.images.image"
WRIST_KEY = "observation.images.image2"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
STATE_NAMES = ["eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_l", "gripper_r"]
ACTION_NAMES = ["dx", "dy", "dz", "drx", "dry", "drz", "gripper"]
LIBERO_FPS = 20  # LIBERO's control frequency


def libero_features(image_size: int, use_videos: bool = True) -> dict:
    """The feature dict of a LIBERO shard: two RGB cameras, state (8), action (7), outcomes."""
    image = {
        "dtype": "video" if use_videos else "image",
        "shape": (image_size, image_size, 3),
        "names": ["height", "width", "channels"],
    }
    return {
        AGENTVIEW_KEY: dict(image),
        WRIST_KEY: dict(image),
        STATE_KEY: {"dtype": "float32", "shape": (8,), "names": STATE_NAMES},
        ACTION_KEY: {"dtype": "float32", "shape": (7,), "names": ACTION_NAMES},
        **OUTCOME_FEATURES,
    }


def normalize_schema(features: dict) -> dict:
    """The comparable part of a feature dict: dtype, shape and names of each producer feature."""
    out = {}
    for name, ft in features.items():
        if name in LEROBOT_DEFAULT_KEYS:
            continue
        out[name] = {"dtype": ft["dtype"], "shape": list(ft["shape"]), "names": ft.get("names")}
    return out


def schema_difference(new: dict, existing: dict, existing_label: str) -> str | None:
    """A one-line description of the first feature that differs, or None when equal."""
    a, b = normalize_schema(new), normalize_schema(existing)
    for name in sorted(set(a) | set(b)):
        if name not in b:
            return f"feature '{name}' is not in the store's schema (from {existing_label})"
        if name not in a:
            return f"feature '{name}' of the store's schema (from {existing_label}) is missing"
        for field in ("dtype", "shape", "names"):
            if a[name][field] != b[name][field]:
                return (f"feature '{name}' has {field} {a[name][field]!r}, the store's schema "
                        f"(from {existing_label}) has {b[name][field]!r}")
    return None


def image_columns(features: dict) -> list[str]:
    """Image features stored inside the parquet files (dtype image); videos live in mp4 files."""
    return [k for k, ft in features.items() if ft["dtype"] == "image"]


def camera_keys(features: dict) -> list[str]:
    """Every camera feature, stored as video or as image, in sorted order."""
    return sorted(k for k, ft in features.items() if ft["dtype"] in ("image", "video"))

EPISODE_KEY = ["shard", "episode_index"]  # an episode across the shards of a store
