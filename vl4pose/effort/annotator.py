"""A click-level simulated annotator: how many clicks it takes to correct a served pose (pure logic).

The annotator looks at every *labelled* keypoint (one with a ground-truth position). A keypoint is correct when
it was served (the product only shows keypoints it places, see :class:`vl4pose.pipeline.PosePrediction.placed`)
and lies within ``threshold`` image pixels of the truth (``<=``, as :func:`vl4pose.metrics.correct_keypoints`).
While any is wrong it moves the worst one (farthest; an unserved one counts as infinitely far) to the truth:
one click. Without a resolver the other keypoints stay where they are (fixing keypoints one by one); with one,
every click is followed by a re-solve with all clicked keypoints clamped at their true positions (the ML
backend's interactive ``PosePipeline.resolve``; Label Studio sends a request only its latest click, so the backend
remembers a task's earlier clicks, :mod:`ml_backend.clickmemory`) and the errors of the rest are recomputed. What the annotator
then sees is what accepting the ML backend's suggestions leaves (:mod:`ml_backend.suggestions`): the first
suggestion's keypoints always take their re-solved position (the backend suggests every label of the draft, placed
by the re-solve or not), a keypoint the re-solve places takes it too, and any other keypoint shown so far stays
where it was; a keypoint is shown once served or placed by a re-solve. Clicked keypoints count as correct. Each
click clamps a new labelled keypoint, so an image takes at most as many clicks as it has labelled keypoints (the
cost of labelling from scratch).

Model I/O (images, the Predictor, the CLI) is in :mod:`vl4pose.effort.run`; this module only sees arrays.
Shapes: K keypoints; positions are (x, y) image pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

Resolver = Callable[[Mapping[int, tuple[float, float]]], tuple[np.ndarray, np.ndarray]]
"""Clamped keypoints {index: (x, y)} -> (pose (K, 2), served (K,) bool) of the re-solved suggestion."""

MODES = ("raw", "refined", "interactive", "scratch")
"""(a) raw network pose fixed one by one, (b) refined pose (what is served) one by one, (c) refined + interactive
re-solve after each click, (d) labelling from scratch (one click per labelled keypoint)."""


@dataclass
class ClickTrace:
    """The clicks on one image in one mode.

    Attributes:
        clicks: keypoint indices in click order.
        fixed: per re-solve, the unclicked keypoints it turned from wrong to correct.
        broken: per re-solve, the unclicked keypoints it turned from correct to wrong.
    """

    clicks: list[int] = field(default_factory=list)
    fixed: list[list[int]] = field(default_factory=list)
    broken: list[list[int]] = field(default_factory=list)


def keypoint_errors(pose: np.ndarray, served: np.ndarray, gt: np.ndarray, labelled: np.ndarray,
                    clicked: Sequence[int] = ()) -> np.ndarray:
    """(K,) distance of each keypoint the annotator still judges: inf where labelled but not served (or not
    finite), NaN where unlabelled or already clicked.

    Args:
        pose: (K, 2) suggestion; served: (K,) bool, shown to the annotator; gt: (K, 2) truth; labelled: (K,) bool.
    """
    err = np.linalg.norm(np.asarray(pose, dtype=float) - np.asarray(gt, dtype=float), axis=1)
    err = np.where(np.asarray(served, dtype=bool) & np.isfinite(err), err, np.inf)
    judged = np.asarray(labelled, dtype=bool).copy()
    judged[list(clicked)] = False
    return np.where(judged, err, np.nan)


def wrong_keypoints(errors: np.ndarray, threshold: float) -> np.ndarray:
    """(K,) bool: judged keypoints (finite or inf error) farther than ``threshold`` pixels from the truth."""
    with np.errstate(invalid="ignore"):
        return ~np.isnan(errors) & (errors > threshold)


def simulate_clicks(pose: np.ndarray, served: np.ndarray, gt: np.ndarray, labelled: np.ndarray, threshold: float,
                    resolver: Resolver | None = None) -> ClickTrace:
    """Correct one image; without ``resolver`` one keypoint at a time, with it interactively.

    Args:
        pose: (K, 2) the first suggestion; served: (K,) bool; gt: (K, 2); labelled: (K,) bool.
        threshold: tolerance in image pixels (e.g. 0.2 x torso size).
        resolver: the interactive re-solve, called after every click with all clicks so far.

    Raises:
        RuntimeError: more clicks than labelled keypoints; a safeguard only: every click takes one labelled keypoint
            out of judgement for good, whatever the resolver returns.
    """
    labelled = np.asarray(labelled, dtype=bool)
    gt = np.asarray(gt, dtype=float)
    pose, served = np.asarray(pose, dtype=float), np.asarray(served, dtype=bool)
    draft = served.copy()  # the first suggestion's labels: every re-solve's answer moves them (ml_backend)
    trace = ClickTrace()
    bound = int(labelled.sum())
    while True:
        errors = keypoint_errors(pose, served, gt, labelled, trace.clicks)
        wrong = wrong_keypoints(errors, threshold)
        if not wrong.any():
            return trace
        if len(trace.clicks) >= bound:
            raise RuntimeError(f"{len(trace.clicks)} clicks on an image with {bound} labelled keypoints")
        worst = int(np.argmax(np.where(wrong, errors, -1.0)))  # ties: the lowest index
        trace.clicks.append(worst)
        if resolver is None:
            continue
        clamped = {i: (float(gt[i, 0]), float(gt[i, 1])) for i in trace.clicks}
        solved, placed = (np.asarray(a) for a in resolver(clamped))
        suggested = draft | placed.astype(bool)
        pose = np.where(suggested[:, None], solved, pose)
        served = served | suggested
        after = wrong_keypoints(keypoint_errors(pose, served, gt, labelled, trace.clicks), threshold)
        before = wrong.copy()
        before[worst] = False
        others = labelled.copy()
        others[trace.clicks] = False
        trace.fixed.append([int(i) for i in np.flatnonzero(others & before & ~after)])
        trace.broken.append([int(i) for i in np.flatnonzero(others & ~before & after)])


def image_effort(raw: np.ndarray, refined: np.ndarray, served: np.ndarray, gt: np.ndarray, labelled: np.ndarray,
                 threshold: float, resolver: Resolver | None) -> dict[str, ClickTrace]:
    """The four modes of :data:`MODES` on one image (``interactive`` only when ``resolver`` is given).

    Args:
        raw, refined: (K, 2) served suggestions; served: (K,) bool; gt: (K, 2); labelled: (K,) bool.
    """
    traces = {"raw": simulate_clicks(raw, served, gt, labelled, threshold),
              "refined": simulate_clicks(refined, served, gt, labelled, threshold),
              "scratch": ClickTrace(clicks=[int(i) for i in np.flatnonzero(labelled)])}
    if resolver is not None:
        traces["interactive"] = simulate_clicks(refined, served, gt, labelled, threshold, resolver)
    return traces


def candidate_reach(candidates: np.ndarray, valid: np.ndarray, gt: np.ndarray, threshold: float) -> np.ndarray:
    """(K,) bool: some valid refinement candidate of the keypoint lies within ``threshold`` of the truth, i.e. a
    re-solve *could* place it correctly (the refinement only chooses among these candidates).

    Args:
        candidates: (K, M, 2) candidate positions in image pixels; valid: (K, M) bool; gt: (K, 2).
    """
    dist = np.linalg.norm(np.asarray(candidates, dtype=float) - np.asarray(gt, dtype=float)[:, None], axis=2)
    with np.errstate(invalid="ignore"):
        return (np.asarray(valid, dtype=bool) & (dist <= threshold)).any(axis=1)


class EffortTally:
    """Clicks of many images at one tolerance, summed per mode and per keypoint."""

    def __init__(self, keypoints: Sequence[str]) -> None:
        self.names = tuple(keypoints)
        k = len(self.names)
        self.images = 0
        self.clicks = {mode: [] for mode in MODES}
        self.per_keypoint = {mode: np.zeros(k, dtype=np.int64) for mode in MODES}
        self.fixed = np.zeros(k, dtype=np.int64)
        self.broken = np.zeros(k, dtype=np.int64)
        self.resolves = 0
        self.reachable_wrong = np.zeros(k, dtype=np.int64)

    def add(self, traces: Mapping[str, ClickTrace], reach: np.ndarray | None = None) -> None:
        """Count one image's traces; ``reach``: (K,) bool from :func:`candidate_reach`, for the keypoints that were
        wrong in the served refined pose."""
        self.images += 1
        if reach is not None:
            wrong = traces["refined"].clicks
            np.add.at(self.reachable_wrong, [i for i in wrong if reach[i]], 1)
        for mode, trace in traces.items():
            self.clicks[mode].append(len(trace.clicks))
            np.add.at(self.per_keypoint[mode], trace.clicks, 1)
        interactive = traces.get("interactive")
        if interactive is not None:
            self.resolves += len(interactive.fixed)
            for fixed, broken in zip(interactive.fixed, interactive.broken):
                np.add.at(self.fixed, fixed, 1)
                np.add.at(self.broken, broken, 1)

    def summary(self) -> dict:
        """Mean clicks, share of images with no click per mode, the interactive saving vs ``refined`` (%),
        and per keypoint: images where it took a click per mode, and how often a re-solve fixed or broke it."""
        out: dict = {"images": self.images}
        for mode in MODES:
            clicks = np.asarray(self.clicks[mode], dtype=float)
            if clicks.size:
                out[mode] = {"mean_clicks": float(clicks.mean()), "zero_click_share": float((clicks == 0).mean()),
                             "total_clicks": int(clicks.sum())}
        if "interactive" in out and out["refined"]["total_clicks"]:
            b, c = out["refined"]["total_clicks"], out["interactive"]["total_clicks"]
            out["interactive_saving_pct"] = 100.0 * (b - c) / b
            pairs = np.array([self.clicks["refined"], self.clicks["interactive"]])
            out["images_interactive_fewer"] = int((pairs[1] < pairs[0]).sum())
            out["images_interactive_more"] = int((pairs[1] > pairs[0]).sum())
            out["resolves"] = self.resolves
            out["fixed_per_resolve"] = float(self.fixed.sum() / max(self.resolves, 1))
            out["broken_per_resolve"] = float(self.broken.sum() / max(self.resolves, 1))
        if "refined" in out and out["refined"]["total_clicks"]:
            out["wrong_with_candidate_share"] = float(self.reachable_wrong.sum() / out["refined"]["total_clicks"])
        out["per_keypoint"] = {
            name: {**{mode: int(self.per_keypoint[mode][i]) for mode in MODES if self.clicks[mode]},
                   "fixed_by_resolve": int(self.fixed[i]), "broken_by_resolve": int(self.broken[i]),
                   "wrong_with_candidate": int(self.reachable_wrong[i])}
            for i, name in enumerate(self.names)}
        return out


def format_effort(report: dict) -> str:
    """A readable table of an effort report (``report["tolerances"]``: tolerance -> :meth:`EffortTally.summary`)."""
    lines = [f"images: {report['images']} (scored {report['scored_images']}, no torso reference "
             f"{report['skipped_no_torso']}, unreadable {report['unreadable']}, box {report['box']})",
             f"labelled keypoints per scored image: {report['labelled_per_image']:.2f}, "
             f"of them not served (below min_peak): {report['unserved_per_image']:.2f}"]
    labels = {"raw": "(a) raw pose", "refined": "(b) refined pose (served)",
              "interactive": "(c) refined + re-solve", "scratch": "(d) from scratch"}
    tolerances = list(report["tolerances"])
    lines.append(f"{'clicks per image':28s}" + "".join(f"{'tol ' + t + ' x torso':>24s}" for t in tolerances))
    for mode in MODES:
        cells = []
        for t in tolerances:
            row = report["tolerances"][t].get(mode)
            cells.append(f"{row['mean_clicks']:8.2f} ({100 * row['zero_click_share']:5.1f}% none)" if row else "-")
        lines.append(f"{labels[mode]:28s}" + "".join(f"{c:>24s}" for c in cells))
    if all("interactive_saving_pct" in report["tolerances"][t] for t in tolerances):
        lines.append(f"{'re-solve saving vs (b)':28s}" + "".join(
            f"{report['tolerances'][t]['interactive_saving_pct']:>23.1f}%" for t in tolerances))
    for t in tolerances:
        summary = report["tolerances"][t]
        if "interactive" not in summary:
            continue
        lines.append(f"per keypoint at tol {t}: images needing a click in (b) / (c); re-solves that fixed / broke it; "
                     f"wrong in (b) with a candidate within tolerance")
        for name, row in summary["per_keypoint"].items():
            lines.append(f"  {name:16s} {row['refined']:6d} {row['interactive']:6d}   "
                         f"{row['fixed_by_resolve']:6d} {row['broken_by_resolve']:6d}   {row['wrong_with_candidate']:6d}")
        if "wrong_with_candidate_share" in summary:
            lines.append(f"  wrong keypoints of (b) with a candidate within tolerance: "
                         f"{100 * summary['wrong_with_candidate_share']:.1f}% (the most a re-solve on the served crop "
                         f"could fix); "
                         f"per re-solve {summary['fixed_per_resolve']:.2f} fixed, {summary['broken_per_resolve']:.2f} "
                         f"broken")
    return "\n".join(lines)
