"""A simulated annotator: plays a person labelling in Label Studio, through Label Studio's API only.

For each task it takes the next one from the label stream (``GET /api/projects/{id}/next/``: lowest likelihood
first), looks up the image's ground truth in the data set, and submits either the served refined suggestion
unchanged (when every keypoint is within ``tolerance`` x torso size of the truth and the same keypoints are
placed: *accepted*) or the ground truth (*corrected*), as an annotation started from the served prediction
(``parent_prediction``), so that the coordinator can tell the two apart. Between rounds it waits until the
project's ``model_version`` moves (the coordinator re-ranked the queue with a new model).

    python -m stack.annotator --tasks 20                 # against the system started by scripts/start.sh
    python -m stack.annotator --rounds 2                 # label two whole rounds
    python -m stack.annotator --label-studio URL --token T --project N --dataset lspet --data DIR --tasks 8
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from backend.errors import CoordinatorError
from backend.services.annotations import read_keypoints
from common.labelconfig import KeypointMapping, LabelConfigError, map_labels, parse_label_config
from stack.labelstudio import connect, next_task, submit_annotation
from stack.project import Coordinator
from stack.start import load_state, stack_config, storage_dir
from vl4pose.data import load_samples
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.data.sample import Sample, image_size
from vl4pose.metrics import torso_size
from vl4pose.skeletons import get_skeleton

T = TypeVar("T")
SKELETON_GUESSES = ("lsp14", "coco17", "mpii16", "hand21")
log = logging.getLogger(__name__)


class AnnotatorError(RuntimeError):
    """The annotator cannot go on (no task, no ground truth, Label Studio refused)."""


class GroundTruth:
    """Samples of a data set found by a task's image URL (local-files path, or the uploaded file's name)."""

    def __init__(self, samples: list[Sample], files_root: Path | None = None) -> None:
        self.files_root = files_root
        self.by_path: dict[Path, Sample] = {}
        self.by_name: dict[str, Sample] = {}
        for sample in samples:
            path = Path(str(sample.image)).resolve()
            kept = self.by_path.get(path)
            if kept is None or sample.labelled.sum() > kept.labelled.sum():  # several people: the most complete
                self.by_path[path] = sample
                self.by_name[path.name] = sample

    @classmethod
    def load(cls, dataset: str, data: Path, split: str | None = None, files_root: Path | None = None,
             skeleton: str | None = None, image_dir: Path | None = None) -> "GroundTruth":
        return cls(load_samples(dataset, data, split, skeleton=skeleton, images=image_dir), files_root)

    def find(self, url: str) -> Sample | None:
        parsed = urllib.parse.urlparse(url)
        if parsed.path.endswith("/data/local-files/") or parsed.path == "/data/local-files/":
            relative = urllib.parse.parse_qs(parsed.query).get("d", [""])[0]
            if self.files_root is not None:
                found = self.by_path.get((self.files_root / relative).resolve())
                if found is not None:
                    return found
            return self.by_name.get(Path(relative).name)
        name = Path(urllib.parse.unquote(parsed.path)).name
        if parsed.path.startswith("/data/upload/") and "-" in name:
            name = name.split("-", 1)[1]  # Label Studio prefixes uploads with a hash
        return self.by_name.get(name)


@dataclass
class Labelled:
    """One submitted annotation."""

    task_id: int
    annotation_id: int
    accepted: bool
    prediction_id: int | None
    score: float | None
    model_version: str | None
    project_model_version: str | None
    max_error_px: float | None


class SimulatedAnnotator:
    """Labels tasks of one Label Studio project with ground truth (see the module docstring).

    Args:
        tolerance: a suggestion is accepted when every keypoint is within ``tolerance`` x the torso size
            (the PCK normaliser) of the ground truth.
    """

    def __init__(self, url: str, token: str, project_id: int, truth: GroundTruth, tolerance: float = 0.2) -> None:
        self.url, self.project_id, self.truth, self.tolerance = url.rstrip("/"), project_id, truth, tolerance
        self.ls = connect(self.url, token, timeout=60.0)
        xml = self.project()["label_config"]
        self.mapping = _mapping(xml)
        if self.mapping is None:
            raise AnnotatorError(f"the labelling config of Label Studio project {project_id} fits none of the "
                                 f"skeletons {', '.join(SKELETON_GUESSES)}; label a project linked by the coordinator")
        self.skeleton = self.mapping.skeleton

    # -- Label Studio (through the coordinator's adapter; its errors become AnnotatorError) -----------
    def _call(self, fn: Callable[..., T], *args: object) -> T:
        try:
            return fn(*args)
        except CoordinatorError as exc:
            raise AnnotatorError(str(exc)) from None

    def project(self) -> dict:
        return self._call(self.ls.project, self.project_id)

    def next_task(self) -> dict | None:
        """The next task of the label stream, or None when every task is labelled."""
        return self._call(next_task, self.ls, self.project_id)

    # -- labelling -----------------------------------------------------------------------------------
    def served(self, task: dict, model_version: str | None) -> dict | None:
        """The refined suggestion the task carries: the prediction of the project's model version."""
        predictions = task.get("predictions") or []
        mine = [p for p in predictions if p.get("model_version") == model_version and p.get("result")]
        return min(mine, key=lambda p: p.get("score") or 0.0) if mine else None

    def label(self, task: dict, model_version: str | None) -> Labelled:
        config = self.mapping.config
        url = (task.get("data") or {}).get(config.image_key)
        sample = self.truth.find(url) if isinstance(url, str) else None
        if sample is None:
            raise AnnotatorError(f"task {task['id']}: no ground truth for image {url!r} in the data set")
        truth = np.where(sample.labelled[:, None], sample.keypoints, np.nan)
        prediction = self.served(task, model_version)
        accepted, error = False, None
        if prediction is not None:
            suggested, _ = read_keypoints(prediction["result"], self.skeleton)
            accepted, error = self.close_enough(suggested, truth)
        if accepted:
            result = prediction["result"]
        else:
            labels = self.mapping.labels
            placed = np.isfinite(truth).all(axis=1) & np.array([label is not None for label in labels])
            result = keypoints_to_results(truth, image_size(sample.image), [label or "" for label in labels], placed,
                                          None, config.keypoint_control, config.image_name)
        annotation_id = self._call(submit_annotation, self.ls, task["id"], result, 4.0 if accepted else 25.0,
                                   prediction["id"] if prediction is not None else None)
        return Labelled(
            task["id"], annotation_id, accepted, prediction["id"] if prediction else None,
            prediction.get("score") if prediction else None, prediction.get("model_version") if prediction else None,
            model_version, error,
        )

    def close_enough(self, suggested: np.ndarray, truth: np.ndarray) -> tuple[bool, float | None]:
        """(accepted, largest keypoint error in pixels) of a suggestion against the truth, both (K, 2) with NaN."""
        labelled = np.isfinite(truth).all(axis=1)
        placed = np.isfinite(suggested).all(axis=1)
        if not labelled.any():
            return False, None
        error = float(np.nanmax(np.linalg.norm(np.where(placed[:, None], suggested, np.inf)[labelled]
                                               - truth[labelled], axis=1)))
        torso = float(torso_size(truth[None], labelled[None], self.skeleton)[0])
        if not np.isfinite(torso) or torso <= 0:
            torso = float(np.linalg.norm(np.ptp(truth[labelled], axis=0)))
        return bool(np.array_equal(placed, labelled) and error <= self.tolerance * torso), error

    def run(self, count: int, on_labelled=None) -> list[Labelled]:
        """Label up to ``count`` tasks from the label stream."""
        done: list[Labelled] = []
        for _ in range(count):
            version = self.project().get("model_version")
            task = self.next_task()
            if task is None:
                break
            labelled = self.label(task, version)
            done.append(labelled)
            if on_labelled is not None:
                on_labelled(labelled)
        return done

    def wait_for_new_version(self, previous: str | None, timeout: float) -> str:
        """Wait until the project's model version is not ``previous`` (the next round is ranked)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            version = self.project().get("model_version")
            if version and version != previous:
                return version
            time.sleep(1.0)
        raise AnnotatorError(f"the project's model version stayed {previous!r} for {timeout:.0f} s: "
                             "is the coordinator's worker running? (see the dashboard)")


def _mapping(xml: str) -> KeypointMapping | None:
    """The labelling config matched to the first skeleton of :data:`SKELETON_GUESSES` it fits, or None."""
    try:
        config = parse_label_config(xml)
    except LabelConfigError:
        return None
    for name in SKELETON_GUESSES:
        try:
            return map_labels(config, get_skeleton(name))
        except LabelConfigError:
            continue
    return None


def _defaults(args) -> dict:
    """What the system started by ``scripts/start.sh`` knows: Label Studio, the active project, its data."""
    state = load_state(storage_dir())
    active = state.get("projects", {}).get(state.get("active", ""), {})
    if not state or not active:
        return {}
    config = stack_config(storage_dir(), state)
    return {"label_studio": config.url("labelstudio"), "token": config.secrets.ls_token,
            "project": active.get("ls_project_id"), "coordinator": config.url("coordinator"),
            "api_token": config.secrets.api_token, "coordinator_project": active.get("project_id"),
            "files_root": str(config.files_root), **active.get("truth", {})}


def _round_budget(known: dict) -> int:
    report = Coordinator(known["coordinator"], known["api_token"]).project(known["coordinator_project"])
    current = report["current_round"]
    return max(1, current["budget"] - current["labelled"]) if current["state"] == "open" else current["budget"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.annotator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label-studio", help="Label Studio URL (default: the started system's)")
    parser.add_argument("--token", help="Label Studio API token (default: the started system's)")
    parser.add_argument("--project", type=int, help="Label Studio project id (default: the active project)")
    parser.add_argument("--dataset", help="ground truth: lspet, lsp, coco or labelstudio (default: the demo's)")
    parser.add_argument("--data", type=Path, help="ground truth: the data set folder or file")
    parser.add_argument("--split", help="split of the data set (default: all images)")
    parser.add_argument("--image-dir", type=Path, help="images of a COCO file or Label Studio export")
    parser.add_argument("--files-root", type=Path, help="Label Studio's local-files document root")
    parser.add_argument("--tasks", type=int, help="label this many tasks")
    parser.add_argument("--rounds", type=int, help="label this many whole rounds (waits for each re-ranking)")
    parser.add_argument("--budget", type=int, help="tasks per round (default: from the coordinator)")
    parser.add_argument("--tolerance", type=float, default=0.2, help="accept within this x torso size (0.2, as PCK@0.2)")
    parser.add_argument("--wait-timeout", type=float, default=1800.0, help="seconds to wait for a re-ranking")
    parser.add_argument("--json", action="store_true", help="print every submitted annotation as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    known = {k: v for k, v in _defaults(args).items() if v is not None}
    url, token = args.label_studio or known.get("label_studio"), args.token or known.get("token")
    project, dataset = args.project or known.get("project"), args.dataset or known.get("dataset")
    data = args.data or (Path(known["data"]) if known.get("data") else None)
    if not (url and token and project and dataset and data) or not (args.tasks or args.rounds):
        parser.error("give --tasks or --rounds; and --label-studio, --token, --project, --dataset and --data "
                     "unless a system started by scripts/start.sh with a demo or labelled data set is running")
    if args.rounds and not args.budget and not known.get("coordinator"):
        parser.error("give --budget (tasks per round) when the system was not started by scripts/start.sh")
    root = args.files_root or (Path(known["files_root"]) if known.get("files_root") else None)
    image_dir = args.image_dir or (Path(known["image_dir"]) if known.get("image_dir") else None)
    truth = GroundTruth.load(dataset, data, args.split, root, image_dir=image_dir)
    annotator = SimulatedAnnotator(url, token, project, truth, args.tolerance)

    def show(item: Labelled) -> None:
        if args.json:
            print(json.dumps(asdict(item)), flush=True)
        else:
            score = f"{item.score:.3g}" if item.score is not None else "-"
            print(f"task {item.task_id:6d}  score {score:>9s}  {item.model_version or 'no suggestion':14s} "
                  f"{'accepted' if item.accepted else 'corrected'}", flush=True)

    try:
        if args.tasks:
            done = annotator.run(args.tasks, show)
        else:
            done = []
            for number in range(args.rounds):
                budget = args.budget or _round_budget(known)
                version = annotator.project().get("model_version")
                done += annotator.run(budget, show)
                if number + 1 < args.rounds:
                    print(f"round labelled ({budget} tasks); waiting for the coordinator to train and re-rank", flush=True)
                    annotator.wait_for_new_version(version, args.wait_timeout)
    except AnnotatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    accepted = sum(item.accepted for item in done)
    if not args.json:
        print(f"labelled {len(done)} tasks: {accepted} suggestions accepted, {len(done) - accepted} corrected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
