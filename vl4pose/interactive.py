"""The interactive re-solve: the annotator's clicks clamped, and what a click tells beyond its own keypoint.

``resolve(analysis, clamped)`` alone only re-chooses among the analysed crop's heatmap peaks. Two more uses of a
click, each measured on LSPET validation (``vl4pose effort``, docs/RESULTS.md) before becoming a default:

- **Swapped sides.** A click that puts a left keypoint where the suggestion had its right twin (or the reverse)
  says the network swapped the pair: the pair's heatmaps are exchanged before the re-solve, so the twin moves to
  the position the clicked keypoint had, instead of staying on top of the click.
- **Re-framing.** On the automatic person box the final crop comes from the network's own person-finding passes;
  where they missed a limb the crop cuts it off, and no re-solve reaches a keypoint outside the crop. A click is
  ground truth about where the person is: when one lies outside the crop (or, with ``margin``, near its border),
  the final pass runs again on the window spanned by the re-solved pose with the clicks in it
  (:func:`vl4pose.crop.person_window`, the final crop's padding: one more flipped network pass), and the clicks
  are clamped there. An annotator's own person box is never re-framed.

Shapes: K keypoints; positions are (x, y) image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vl4pose.data.sample import box_from_keypoints
from vl4pose.errors import ConfigError
from vl4pose.pipeline import Analysis, Clamps, NetworkArrays, PosePipeline, PosePrediction

REFRAME_RULES = ("never", "outside", "always")
"""never: re-solve on the analysed crop only; outside: re-frame when a click lies outside the crop's central
``1 - 2 * margin`` share; always: re-frame on every request with clicks."""


@dataclass(frozen=True)
class ClickConfig:
    """What the interactive re-solve does with clicks.

    reframe, margin: when to re-frame the final crop (:data:`REFRAME_RULES`; margin: a share of the crop's side).
    swap_radius: a click within this share of the crop's side of the suggested twin keypoint (and nearer to it
    than to the clicked keypoint's own suggestion) swaps the pair; 0 turns swapping off.
    The defaults were chosen on LSPET val with the simulated annotator (docs/RESULTS.md, "Annotation effort"): the
    re-solve's saving against fixing keypoints one by one went from 6.2 % (clamps only) to 11.6 % (re-framing)
    and 13.8 % (and swapping) at 0.2 x torso.
    """

    reframe: str = "outside"
    margin: float = 0.0
    swap_radius: float = 0.1

    def __post_init__(self) -> None:
        if self.reframe not in REFRAME_RULES:
            raise ConfigError(f"re-frame rule {self.reframe!r} is not one of {REFRAME_RULES}")
        if not 0.0 <= self.margin < 0.5:
            raise ConfigError(f"re-frame margin {self.margin} must be in [0, 0.5): a share of the crop's side")
        if not 0.0 <= self.swap_radius <= 1.0:
            raise ConfigError(f"swap radius {self.swap_radius} must be in [0, 1]: a share of the crop's side")


def swapped_pairs(analysis: Analysis, served: PosePrediction, clicks: dict[int, np.ndarray],
                  flip_permutation: Sequence[int], radius: float) -> list[tuple[int, int]]:
    """The (clicked, twin) pairs whose click lies on the twin's suggestion: within ``radius`` x the crop's side
    of it and nearer to it than to the clicked keypoint's own suggestion; twins that are clicked too are left
    alone (the annotator placed both).

    Args:
        served: the suggestion without clicks (``resolve(analysis)``); clicks: index -> (2,) image pixels.
    """
    if radius <= 0:
        return []
    reach = radius * analysis.window.side
    pairs = []
    for k, xy in clicks.items():
        twin = int(flip_permutation[k])
        if twin == k or twin in clicks or not served.placed[twin]:
            continue
        to_twin = float(np.linalg.norm(served.refined[twin] - xy))
        if to_twin <= reach and to_twin < float(np.linalg.norm(served.refined[k] - xy)):
            pairs.append((k, twin))
    return pairs


def swap_heatmaps(analysis: Analysis, pairs: Sequence[tuple[int, int]]) -> Analysis:
    """A copy of ``analysis`` whose heatmap channels of each pair are exchanged (bone parameters unchanged)."""
    if not pairs:
        return analysis
    heatmaps = analysis.output.heatmaps.copy()
    for a, b in pairs:
        heatmaps[:, [a, b]] = heatmaps[:, [b, a]]
    return replace(analysis, output=NetworkArrays(heatmaps, analysis.output.mean, analysis.output.logvar))


def reframe_box(analysis: Analysis, prediction: PosePrediction, clicked: Sequence[int],
                config: ClickConfig = ClickConfig()) -> np.ndarray | None:
    """(4,) person box (x0, y0, x1, y1) for a new final pass, or None to keep the analysed crop.

    Args:
        analysis: the analysed image (its ``window`` is the crop the network saw).
        prediction: ``resolve(analysis, clamped)``: the clicked keypoints sit at their clicks.
        clicked: indices of the clamped keypoints.
    """
    clicked = [int(i) for i in clicked]
    if config.reframe == "never" or not clicked:
        return None
    if config.reframe == "outside":
        x0, y0, x1, y1 = analysis.window.box()
        inset = config.margin * (x1 - x0)
        points = prediction.refined[clicked]
        inside = ((points[:, 0] >= x0 + inset) & (points[:, 0] <= x1 - inset)
                  & (points[:, 1] >= y0 + inset) & (points[:, 1] <= y1 - inset))
        if inside.all():
            return None
    keep = np.asarray(prediction.placed, dtype=bool).copy()
    keep[clicked] = True
    return box_from_keypoints(prediction.refined, keep)


def resolve_clicked(pipeline: PosePipeline, analysis: Analysis, clamped: Clamps, config: ClickConfig = ClickConfig(),
                    reanalyse: Callable[[np.ndarray], Analysis] | None = None) -> PosePrediction:
    """The interactive re-solve: swapped pairs exchanged, ``resolve(analysis, clamped)``, then, when
    :func:`reframe_box` asks for it, the same on ``reanalyse(box)``, a new final pass over the window the
    clicks span.

    Args:
        clamped: keypoint names or indices -> (x, y) image pixels.
        reanalyse: person box (4,) -> the image analysed in that box (``pipeline.analyse(image, box)``, perhaps
            cached); None never re-frames (an annotator's own person box).
    """
    clicks = {k if isinstance(k, int) else pipeline.skeleton.index(k): np.asarray(xy, dtype=float)
              for k, xy in clamped.items()}
    prediction = _swap_and_resolve(pipeline, analysis, clamped, clicks, config)
    box = reframe_box(analysis, prediction, list(clicks), config) if reanalyse is not None else None
    if box is None:
        return prediction
    return _swap_and_resolve(pipeline, reanalyse(box), clamped, clicks, config)


def _swap_and_resolve(pipeline: PosePipeline, analysis: Analysis, clamped: Clamps, clicks: dict[int, np.ndarray],
                      config: ClickConfig) -> PosePrediction:
    if config.swap_radius > 0 and clicks:
        pairs = swapped_pairs(analysis, pipeline.resolve(analysis), clicks, pipeline.flip_permutation,
                              config.swap_radius)
        analysis = swap_heatmaps(analysis, pairs)
    return pipeline.resolve(analysis, clamped)
