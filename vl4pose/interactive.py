"""The interactive re-solve: the annotator's clicks clamped, and what a click tells beyond its own keypoint.

``resolve(analysis, clamped)`` alone only re-chooses among the analysed crop's heatmap peaks. Two more uses of a
click, each measured on LSPET validation (``vl4pose effort``, docs/RESULTS.md) before becoming a default:

- **Swapped sides.** A click that puts a left keypoint where the suggestion had its right twin (or the reverse)
  says the network swapped the pair: the pair's heatmaps are exchanged before the re-solve, so the twin moves to
  the position the clicked keypoint had, instead of staying on top of the click.
- **Re-framing.** On the automatic person box the final crop comes from the network's own person-finding passes;
  where they missed a limb the crop cuts it off or frames the person badly, and no re-solve reaches a keypoint the
  crop's heatmaps have no peak for. A click is ground truth about where the person is: on every click (the
  default; ``reframe="outside"``: only when one lies outside the crop or, with ``margin``, near its border) the
  final pass runs again on the window spanned by the re-solved pose with the clicks in it
  (:func:`vl4pose.crop.person_window`, the final crop's padding: one more final pass), and the clamped re-solve
  chooses each keypoint among the peaks of both crops, so what the first crop had right is not lost to the new
  one's framing. An annotator's own person box is never re-framed.

Shapes: K keypoints; positions are (x, y) image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from vl4pose.blazepose import with_landmarks
from vl4pose.crop import apply_affine
from vl4pose.data.sample import box_from_keypoints
from vl4pose.errors import ConfigError
from vl4pose.pipeline import Analysis, Clamps, PosePipeline
from vl4pose.postprocess import Candidates, find_candidates
from vl4pose.prediction import PosePrediction
from vl4pose.refine import refine

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
    re-solve's saving against fixing keypoints one by one went from 6.2 % (clamps only) to 11.6 % (re-framing a
    click outside the crop), 13.8 % (and swapping) and 14.5 % (choosing among both crops' candidates) at 0.2 x
    torso; with the multi-scale test (session 23) re-framing on every click beat re-framing outside the crop
    (17.1 % against 15.9 %; 6.8 % against 5.3 % at 0.1 x torso).
    """

    reframe: str = "always"
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

    def swapped(heatmaps: np.ndarray | None) -> np.ndarray | None:
        if heatmaps is None:
            return None
        heatmaps = heatmaps.copy()
        for a, b in pairs:
            heatmaps[:, [a, b]] = heatmaps[:, [b, a]]
        return heatmaps

    output = analysis.output
    return replace(analysis, output=replace(output, heatmaps=swapped(output.heatmaps), single=swapped(output.single)))


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
    :func:`reframe_box` asks for it, a re-solve on ``reanalyse(box)`` (a new final pass over the window the clicks
    span) that chooses each keypoint among the candidates of both crops (:func:`resolve_both`).

    Args:
        clamped: keypoint names or indices -> (x, y) image pixels.
        reanalyse: person box (4,) -> the image analysed in that box (``pipeline.analyse(image, box)``, perhaps
            cached); None never re-frames (an annotator's own person box).
    """
    clicks = {k if isinstance(k, int) else pipeline.skeleton.index(k): np.asarray(xy, dtype=float)
              for k, xy in clamped.items()}
    first = _swapped(pipeline, analysis, clicks, config)
    prediction = pipeline.resolve(first, clamped)
    box = reframe_box(first, prediction, list(clicks), config) if reanalyse is not None else None
    if box is None:
        return prediction
    return resolve_both(pipeline, first, _swapped(pipeline, reanalyse(box), clicks, config), clicks)


def resolve_both(pipeline: PosePipeline, first: Analysis, second: Analysis, clicks: Mapping[int, np.ndarray]
                 ) -> PosePrediction:
    """The clamped re-solve over the candidates of two crops of one image: ``second``'s heatmap peaks and ``first``'s
    mapped into ``second``'s heatmap pixels (and BlazePose's landmarks where ``second`` has them), with ``second``'s
    bone-length model; a keypoint the first crop had right keeps that choice when the second crop's peaks do not
    explain the skeleton better (chosen on LSPET val: 14.5 % of the one-by-one clicks saved at 0.2 x torso against
    13.8 % with the second crop's candidates only).

    Args:
        clicks: keypoint index -> (2,) image pixels, clamped.

    Returns:
        ``resolve(second, clicks)`` with ``refined`` and ``confidence`` from the joint choice; a keypoint chosen from
        the first crop or at its landmark counts as ``moved``, one from the first crop as ``placed`` when its peak
        there reaches ``min_peak``.
    """
    calibration = pipeline.calibration
    size = second.output.heatmaps.shape[-1]
    to_second = pipeline.image_to_heat(second.window)
    first_to_second = to_second @ np.linalg.inv(pipeline.image_to_heat(first.window))
    own, other = (find_candidates(a.output.heatmaps, calibration.max_candidates, pipeline.decoder, pipeline.sigma)
                  for a in (second, first))
    union = Candidates(np.concatenate([own.xy, apply_affine(first_to_second, other.xy)], axis=2),
                       np.concatenate([own.value, other.value], axis=2),
                       np.concatenate([own.valid, other.valid], axis=2))
    if second.landmarks is not None:  # BlazePose's, one more candidate (valued against the second crop's peaks)
        union = with_landmarks(union, apply_affine(to_second, second.landmarks)[None], float(size))
    prediction = pipeline.resolve(second, {k: tuple(xy) for k, xy in clicks.items()})  # clicked: placed, not moved
    for k, xy in clicks.items():
        union.clamp(k, 0, tuple(apply_affine(to_second, xy)))
    solved = refine(union, union.log_probs(calibration.temperature), second.output.mean, second.output.logvar,
                    pipeline.skeleton, float(size))
    choice = solved.choice[0]
    m = own.xy.shape[2]
    from_first = (choice >= m) & (choice < m + other.xy.shape[2])  # never a clicked keypoint (its only slot: the first)
    value = np.take_along_axis(union.value[0], choice[:, None], axis=1)[:, 0]
    return replace(prediction, refined=apply_affine(np.linalg.inv(to_second), solved.xy[0]),
                   confidence=solved.confidence[0].astype(np.float64),
                   placed=prediction.placed | (from_first & (value >= calibration.min_peak)),
                   moved=prediction.moved | (choice >= m))  # from the first crop or a landmark


def _swapped(pipeline: PosePipeline, analysis: Analysis, clicks: dict[int, np.ndarray],
             config: ClickConfig) -> Analysis:
    """``analysis`` with the heatmaps of every pair :func:`swapped_pairs` finds exchanged."""
    if config.swap_radius <= 0 or not clicks:
        return analysis
    pairs = swapped_pairs(analysis, pipeline.resolve(analysis), clicks, pipeline.flip_permutation,
                          config.swap_radius)
    return swap_heatmaps(analysis, pairs)
