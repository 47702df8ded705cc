"""VL4Pose: active learning for 2D pose estimation through a skeleton likelihood."""

__version__ = "0.1.0"
