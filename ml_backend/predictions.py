"""``/setup`` and ``/predict``: Label Studio JSON in, Predictor calls, Label Studio JSON out.

Each task gets a list of predictions, in task order: the refined pose under the served model
version (per-keypoint score = refined confidence, prediction score = calibrated likelihood, low =
label first) and the raw network pose under ``<version>-raw``. A task whose image fails gets ``[]``
and a logged reason; the other tasks are unaffected. Keypoints the model does not place are left out.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.labelconfig import KeypointMapping, guess_skeleton, map_labels, parse_label_config
from ml_backend.clickmemory import ClickMemory, Kept, answer_accepted
from ml_backend.images import ImageFetcher, ProjectAccess
from ml_backend.interactive import Clicks, parse_context, with_earlier
from ml_backend.models import LRUCache, ModelService, ServedModel
from ml_backend.projects import ProjectStore, parse_project_id
from ml_backend.suggestions import adopt_ids, draft_places, draft_region_ids, place_clicks
from vl4pose.data.labelstudio import keypoints_to_results
from vl4pose.data.sample import image_size
from vl4pose.errors import ImageError, VL4PoseError
from vl4pose.interactive import ClickConfig, resolve_clicked
from vl4pose.pipeline import Analysis
from vl4pose.predictor import PosePrediction

log = logging.getLogger(__name__)

RAW_SUFFIX = "-raw"
CLICKS = ClickConfig()
"""What an interactive ``/predict`` does with the clicks (:mod:`vl4pose.interactive`; chosen on LSPET val)."""


class RequestError(VL4PoseError):
    """The request body is not what Label Studio sends (answered with 400)."""


class ProjectNotLinked(VL4PoseError):
    """The Label Studio project has no model here (answered with 404 ``project_not_linked``)."""

    def __init__(self, project_id: str | None) -> None:
        super().__init__(
            f"Label Studio project {project_id} is not linked to a VL4Pose model in this ML backend's registry; "
            f"link it with the coordinator (python -m backend link --project-id {project_id} ...), which gives it "
            "its own model versions" if project_id else
            "the request names no Label Studio project ('project': '<id>.<timestamp>'); Label Studio always sends it")


@dataclass
class PredictionService:
    models: ModelService
    fetcher: ImageFetcher
    projects: ProjectStore
    analyses: LRUCache
    predict_chunk: int = 64
    max_pixels: int = 40_000_000
    memory: ClickMemory | None = None
    """The tasks' earlier clicks (None: each interactive request stands alone)."""

    # -- /setup -------------------------------------------------------------------------------------
    def setup(self, body: dict) -> dict:
        """Validate the project's label config, then remember its hostname and token; answer the model version.

        Raises:
            RequestError: no ``schema``. ProjectNotLinked: the project has no model here.
            LabelConfigError: the config does not fit the project's skeleton (nothing is stored then).
        """
        project_id = parse_project_id(body.get("project"))
        schema = body.get("schema")
        if not isinstance(schema, str):
            raise RequestError("/setup needs 'schema': the project's label config XML")
        self._require_linked(project_id)
        config = parse_label_config(schema)
        version = self.models.current_version(project_id)
        skeleton = self.models.skeleton(version) if version else self.models.project_skeleton(project_id)
        mapping = map_labels(config, skeleton) if skeleton else guess_skeleton(config)
        self.projects.remember(project_id, body.get("hostname"), body.get("access_token"), schema)
        missing = [k for k, label in zip(mapping.skeleton.keypoints, mapping.labels) if label is None]
        if missing:
            log.info("project %s: the config has no label for %s; those keypoints are never suggested",
                     project_id, missing)
        log.info("project %s set up: skeleton %s, model version %s, interactive %s", project_id,
                 mapping.skeleton.name, version, config.smart)
        return {"model_version": version, "skeleton": mapping.skeleton.name}

    def _require_linked(self, project_id: str | None) -> str:
        if project_id is None or not self.models.linked(project_id):
            raise ProjectNotLinked(project_id)
        return project_id

    # -- /predict -----------------------------------------------------------------------------------
    def predict(self, body: dict) -> dict:
        """Answer a ``/predict`` body (batch, or interactive when ``params.context`` holds clicks).

        Raises:
            RequestError, LabelConfigError, ContextError: the request cannot be answered (4xx).
        """
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
            raise RequestError("/predict needs 'tasks': a list of task objects")
        project_id = self._require_linked(parse_project_id(body.get("project")))
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        xml = body.get("label_config") or self.projects.label_config(project_id)
        if not isinstance(xml, str):
            raise RequestError("/predict needs 'label_config' (or an earlier /setup for this project)")
        model = self.models.get(project_id)
        if model is None:
            error = self.models.last_error(project_id)
            log.warning("project %s has no model version yet in %s%s: answering %d task(s) with no predictions",
                        project_id, self.models.registry.root, f" ({error})" if error else "", len(tasks))
            context = params.get("context")
            interactive = isinstance(context, dict) and bool(context.get("result"))
            return {"results": [{"result": []} if interactive else [] for _ in tasks], "model_version": None}
        mapping = self._mapping(xml, model)
        clicks = parse_context(params.get("context"), mapping)
        access = self.projects.access(project_id)
        if clicks is not None:
            if len(tasks) != 1:
                raise RequestError(f"an interactive request (params.context with clicks) must carry exactly one "
                                   f"task, got {len(tasks)}")
            return {"results": [self._interactive(model, mapping, tasks[0], access, clicks, project_id)],
                    "model_version": model.version}
        return {"results": self._batch(model, mapping, tasks, access), "model_version": model.version}

    @staticmethod
    def _mapping(xml: str, model: ServedModel) -> KeypointMapping:
        return map_labels(parse_label_config(xml), model.predictor.skeleton)

    def _image_url(self, task: dict, mapping: KeypointMapping) -> str:
        data = task.get("data")
        url = data.get(mapping.config.image_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise ImageError(f"task {task.get('id')} has no image URL in data[{mapping.config.image_key!r}]; "
                             f"import tasks as {{\"{mapping.config.image_key}\": \"<image url>\"}}")
        return url

    def _batch(self, model: ServedModel, mapping: KeypointMapping, tasks: Sequence[dict], access: ProjectAccess
               ) -> list[list[dict]]:
        answers: list[list[dict]] = [[] for _ in tasks]
        for start in range(0, len(tasks), self.predict_chunk):
            chunk = list(range(start, min(start + self.predict_chunk, len(tasks))))
            urls: dict[int, str] = {}
            for i in chunk:
                try:
                    urls[i] = self._image_url(tasks[i], mapping)
                except ImageError as exc:
                    log.warning("task %s: no prediction: %s", tasks[i].get("id"), exc)
            fetched = dict(zip(urls, self.fetcher.fetch_many(list(urls.values()), access)))
            for i, f in fetched.items():
                if isinstance(f, ImageError):
                    log.warning("task %s: no prediction: %s", tasks[i].get("id"), f)
            ready = [i for i, f in fetched.items() if not isinstance(f, ImageError)]
            for group in self._pixel_groups(ready, fetched):
                predictions = model.predictor.predict_batch([fetched[i] for i in group])
                for i, prediction in zip(group, predictions):
                    if isinstance(prediction, ImageError):
                        log.warning("task %s: no prediction: %s", tasks[i].get("id"), prediction)
                        self.fetcher.forget(urls[i], access)
                        continue
                    answers[i] = self._predictions(prediction, mapping, model.version)
        done = sum(1 for a in answers if a)
        log.info("predicted %d of %d task(s) with model version %s", done, len(tasks), model.version)
        return answers

    def _pixel_groups(self, ready: list[int], fetched: dict) -> list[list[int]]:
        """Split images into groups of at most ``max_pixels`` pixels together (sizes from the headers), so a
        request never holds more than about one limit-sized image's worth of decoded pixels at a time."""
        groups: list[list[int]] = []
        total = 0
        for i in ready:
            try:
                width, height = image_size(fetched[i])
                pixels = width * height
            except ImageError:
                pixels = 0  # the predictor reports it in its slot
            if groups and total + pixels <= self.max_pixels:
                groups[-1].append(i)
                total += pixels
            else:
                groups.append([i])
                total = pixels
        return groups

    def _interactive(self, model: ServedModel, mapping: KeypointMapping, task: dict, access: ProjectAccess,
                     clicks: Clicks, project_id: str) -> dict:
        """The re-solve around the clicks, as suggestions Label Studio's "accept all" applies in place.

        Clicks from Label Studio's editor are remembered per task (:mod:`ml_backend.clickmemory`): the re-solve
        clamps the earlier ones too. An earlier click is suggested at its place until an answer is known to have been
        accepted since (:func:`~ml_backend.clickmemory.answer_accepted`; accepting all deletes the click's own
        region), and not at all once settled so (accepting all then leaves it where the annotator put it, even if
        moved by hand since).
        """
        memory = self.memory if clicks.from_editor else None
        kept = memory.recall(project_id, task) if memory is not None else Kept()
        all_clicks, earlier = with_earlier(clicks, kept.clicks, mapping)
        try:
            url = self._image_url(task, mapping)
            path = self.fetcher.fetch(url, access)
            clamped, box = all_clicks.in_pixels(mapping.skeleton, image_size(path, self.max_pixels))
            source = (model.version, self.fetcher.absolute_url(url, access))

            def analysis_in(person_box: np.ndarray | None) -> tuple[Analysis, bool]:
                key = source + (tuple(np.round(person_box, 1)) if person_box is not None else None,)
                return self.analyses.get_or_compute(key, lambda: model.predictor.analyse(path, person_box))

            analysis, hit = analysis_in(box)
            # the automatic box may be re-framed around the clicks; an annotator's own box never is
            reanalyse = (lambda found: analysis_in(found)[0]) if box is None else None
            prediction = resolve_clicked(model.predictor, analysis, clamped, CLICKS, reanalyse)
        except ImageError as exc:
            log.warning("task %s: no suggestion: %s", task.get("id"), exc)
            return {"result": [], "model_version": model.version}
        # every placed keypoint, the clicked ones at the click, under the draft's region ids (ml_backend.suggestions);
        # the clicked labels and every label the draft holds are suggested even where the re-solve would not place
        # them: accepting all then moves each of the draft's keypoints, none keeps its served place beside the others
        ids = draft_region_ids(task, clicks.existing, mapping.config.keypoint_control, model.version)
        also = np.array([label is not None and label in ids for label in mapping.labels], dtype=bool)
        also[list(clamped)] = True
        result = self._results(prediction.refined, prediction, mapping, prediction.confidence, also=also)
        served = draft_places(task, clicks.existing, mapping.config.keypoint_control, model.version)
        accepted = answer_accepted(kept, clicks.existing, served)
        settled = (set(earlier) if accepted else set(kept.settled)) & set(earlier)
        result = [item for item in result if item["value"]["keypointlabels"][0] not in settled]
        place_clicks(result, all_clicks.at())
        matched = adopt_ids(result, ids, task.get("id"))
        if memory is not None:
            memory.remember(project_id, task, clicks.keypoints,
                            {item["value"]["keypointlabels"][0]: [item["value"]["x"], item["value"]["y"]]
                             for item in result}, sorted(settled))
        log.info("task %s: %d suggestion(s) around %d clicked keypoint(s) (%d earlier, %d of them settled), %d "
                 "replacing the draft's regions (image analysis %s)", task.get("id"), len(result), len(clamped),
                 len(earlier), len(settled), matched, "cached" if hit else "computed")
        return {"result": result, "score": _score(prediction.score), "model_version": model.version}

    # -- Label Studio results -----------------------------------------------------------------------
    def _predictions(self, prediction: PosePrediction, mapping: KeypointMapping, version: str) -> list[dict]:
        score = _score(prediction.score)
        refined = self._results(prediction.refined, prediction, mapping, prediction.confidence)
        raw = self._results(prediction.raw, prediction, mapping, np.clip(prediction.peak, 0.0, 1.0))
        return [{"result": refined, "score": score, "model_version": version},
                {"result": raw, "score": score, "model_version": version + RAW_SUFFIX}]

    @staticmethod
    def _results(keypoints: np.ndarray, prediction: PosePrediction, mapping: KeypointMapping, scores: np.ndarray,
                 also: np.ndarray | None = None) -> list[dict]:
        """Results for the placed keypoints (and those ``also`` marks) that have a label, each with a fresh region
        id."""
        labelled = np.array([label is not None for label in mapping.labels])
        placed = (np.asarray(prediction.placed, dtype=bool) | (False if also is None else also)) & labelled
        results = keypoints_to_results(keypoints, prediction.image_size, [label or "" for label in mapping.labels],
                                       placed, np.nan_to_num(scores, nan=0.0), mapping.config.keypoint_control,
                                       mapping.config.image_name)
        for item in results:
            item["id"] = uuid.uuid4().hex[:10]
        return results


def _score(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
