"""Exception classes of the vl4pose package.

Every message says what was expected, what came, and how to fix it. Callers (the CLI, the ML
backend, the coordinator) catch :class:`VL4PoseError` and show the message, never a traceback.
"""


class VL4PoseError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(VL4PoseError):
    """A setting, preset, skeleton or option is wrong."""


class DataError(VL4PoseError):
    """A dataset file (annotation file, split file) is missing or malformed."""


class ImageError(DataError):
    """An image is missing, unreadable, corrupt or too large."""


class CheckpointError(VL4PoseError):
    """A checkpoint folder is missing, incomplete or incompatible."""


class TrainingError(VL4PoseError):
    """Training cannot start or cannot go on (for example no usable keypoints)."""
