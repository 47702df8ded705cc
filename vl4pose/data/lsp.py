"""LSP-format ``.mat`` loaders (LSP 3x14xN and LSPET 14x3xN layouts) and ``split.json`` splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from vl4pose.data.sample import Sample
from vl4pose.errors import DataError

log = logging.getLogger(__name__)


def read_lsp_joints(mat_path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Read ``joints.mat`` in either LSP layout.

    Returns:
        keypoints: (N, 14, 2) float, NaN where missing.
        visibility: (N, 14) int, COCO convention (0 missing, 1 occluded, 2 visible).
        layout: ``"lsp"`` (3 x 14 x N, flag 0 = visible, 1 = occluded, positions always given) or
            ``"lspet"`` (14 x 3 x N, flag 1 = annotated, 0 = missing).
    """
    if not mat_path.is_file():
        raise DataError(f"{mat_path} not found; point --data at the folder holding joints.mat and images/")
    import scipy.io  # here, not at import: the torch-free ONNX scorer imports vl4pose.data

    try:
        mat = scipy.io.loadmat(str(mat_path))
    except Exception as exc:  # scipy raises several unrelated types for broken files
        raise DataError(f"{mat_path} is not a readable MATLAB file ({exc})") from exc
    if "joints" not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise DataError(f"{mat_path} has no variable 'joints' (found {names}); expected an LSP joints.mat")
    joints = np.asarray(mat["joints"], dtype=np.float64)
    if joints.ndim == 3 and joints.shape[:2] == (3, 14):
        xy = joints[:2].transpose(2, 1, 0)  # (N, 14, 2)
        visibility = np.where(joints[2].T > 0.5, 1, 2).astype(np.int64)
        layout = "lsp"
    elif joints.ndim == 3 and joints.shape[:2] == (14, 3):
        xy = joints[:, :2].transpose(2, 0, 1)
        annotated = joints[:, 2].T > 0.5
        visibility = np.where(annotated, 2, 0).astype(np.int64)
        xy = np.where(annotated[..., None], xy, np.nan)
        layout = "lspet"
    else:
        raise DataError(
            f"{mat_path}: 'joints' has shape {joints.shape}; expected 3x14xN (LSP) or 14x3xN (LSPET)"
        )
    return xy, visibility, layout


def read_split(split_path: Path, split: str) -> list[int]:
    """Image numbers (1-based) of one split from a ``split.json`` {name: [numbers]} file."""
    try:
        data = json.loads(split_path.read_text())
    except FileNotFoundError:
        raise DataError(f"split file {split_path} not found; drop --split or pass --split-file") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"split file {split_path} is not valid JSON ({exc})") from exc
    names = [k for k, v in data.items() if isinstance(v, list)]
    if split not in names:
        raise DataError(f"split {split!r} is not in {split_path}; it has {names}")
    return [int(n) for n in data[split]]


def load_lsp(data_dir: Path, split: str | None = None, split_file: Path | None = None) -> list[Sample]:
    """Samples of an LSP or LSPET folder (``joints.mat`` + ``images/im%04d.jpg`` or ``im%05d.jpg``).

    Args:
        data_dir: the dataset folder.
        split: a split name from ``split.json`` (or ``split_file``), or None / ``"all"`` for every image.
        split_file: an explicit split file; defaults to ``data_dir/split.json`` when present.
    """
    data_dir = Path(data_dir)
    keypoints, visibility, layout = read_lsp_joints(data_dir / "joints.mat")
    count = keypoints.shape[0]
    digits = 5 if layout == "lspet" else 4
    if split in (None, "all"):
        numbers = list(range(1, count + 1))
    else:
        numbers = read_split(split_file or data_dir / "split.json", split)
    bad = [n for n in numbers if not 1 <= n <= count]
    if bad:
        raise DataError(f"split {split!r} names images {bad[:5]} outside 1..{count} of {data_dir}/joints.mat")
    images = data_dir / "images"
    if not images.is_dir():
        raise DataError(f"{images} not found; an LSP folder holds joints.mat and images/")
    samples = []
    for n in numbers:
        name = f"im{n:0{digits}d}"
        samples.append(Sample(name, images / f"{name}.jpg", keypoints[n - 1].copy(), visibility[n - 1].copy()))
    log.info("loaded %d %s samples from %s (split %s)", len(samples), layout, data_dir, split or "all")
    return samples
