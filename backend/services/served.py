"""The served suggestion against what the annotator submitted: PCK counts, accepted unchanged, and the
correction effort (how many keypoints the annotator had to touch).

Correction effort of one submitted annotation whose task had a served suggestion (pre-annotation):

- **moved**: keypoints placed in both whose submitted position is farther than the tolerance from the served
  one. The tolerance is ``PCK_ALPHA`` (0.2) x the torso size of the *submitted* pose -- the rule that counts
  ``served_correct``, so a keypoint is moved exactly when it is served but not correct. Without a torso
  reference in the submitted pose (neither shoulder-hip pair labelled, or a skeleton without a torso) there
  is no tolerance: a keypoint counts as moved when it moved more than ``UNCHANGED_PX`` (1 px).
- **added**: keypoints submitted that the suggestion did not place.
- **deleted**: keypoints the suggestion placed that the submission does not have.

``total = moved + added + deleted``; 0 means the suggestion was accepted without correction (every keypoint
within tolerance, the same ones placed). A task without a served suggestion has no such figure: the
coordinator stores its number of submitted keypoints instead (labelling from scratch, one click each) and
keeps those tasks apart in the per-round figures (they have ``served_total`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vl4pose.metrics import correct_keypoints, torso_size
from vl4pose.skeletons import Skeleton

PCK_ALPHA = 0.2
UNCHANGED_PX = 1.0
"""A submitted keypoint within this many pixels of the served one counts as accepted unchanged."""


@dataclass(frozen=True)
class Corrections:
    """Keypoints an annotator touched relative to the served suggestion (see the module docstring)."""

    moved: int
    added: int
    deleted: int
    tolerance_px: float | None
    """The distance beyond which a keypoint counts as moved; None without a torso reference (then 1 px)."""

    @property
    def total(self) -> int:
        return self.moved + self.added + self.deleted


def _placed(keypoints: np.ndarray) -> np.ndarray:
    """(K,) bool: rows of a (K, 2) pose with finite coordinates."""
    return np.isfinite(keypoints).all(axis=1)


def compare_poses(served: np.ndarray, submitted: np.ndarray, skeleton: Skeleton) -> tuple[int, int, bool]:
    """PCK@0.2 counts of a served pose against the submitted one, and whether it was accepted unchanged.

    Args:
        served, submitted: (K, 2) pixels, NaN rows = keypoint not served / not submitted.

    Returns:
        (correct, evaluated, unchanged). A submitted keypoint the model did not serve counts as wrong;
        evaluated is 0 when the submitted pose has no torso (no normaliser).
    """
    labelled, served_placed = _placed(submitted), _placed(served)
    unchanged = bool(
        np.array_equal(labelled, served_placed)
        and (not labelled.any() or np.linalg.norm(served[labelled] - submitted[labelled], axis=1).max() <= UNCHANGED_PX)
    )
    torso = torso_size(submitted[None], labelled[None], skeleton)
    pred = np.where(served_placed[:, None], served, 1e9)[None]
    correct = correct_keypoints(pred, submitted[None], labelled[None], torso, PCK_ALPHA)
    evaluated = int(np.isfinite(correct).sum())
    return int(np.nansum(correct)), evaluated, unchanged


def correction_effort(served: np.ndarray, submitted: np.ndarray, skeleton: Skeleton) -> Corrections:
    """The keypoints moved beyond tolerance, added and deleted between a served and a submitted pose.

    Args:
        served, submitted: (K, 2) image pixels, NaN rows = keypoint not served / not submitted.
    """
    labelled, served_placed = _placed(submitted), _placed(served)
    both = labelled & served_placed
    torso = float(torso_size(submitted[None], labelled[None], skeleton)[0])
    tolerance = PCK_ALPHA * torso if np.isfinite(torso) else None
    distance = np.linalg.norm(np.where(both[:, None], served - submitted, 0.0), axis=1)
    moved = int((both & (distance > (tolerance if tolerance is not None else UNCHANGED_PX))).sum())
    return Corrections(moved, int((labelled & ~served_placed).sum()), int((served_placed & ~labelled).sum()),
                       tolerance)
