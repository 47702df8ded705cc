"""Linking a project in one call: create or adopt the Label Studio project, import images (and existing
labels as annotations or held-out ground truth), connect the ML backend and the coordinator's webhook,
switch on uncertainty sampling, record everything, open round 1 and, given an initial checkpoint,
publish it as version 0 and rank the queue with it. Re-running a link is safe (nothing is imported,
registered or opened twice)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from backend.config import ACQUISITION_STRATEGIES, Settings
from backend.db import Database
from backend.errors import CoordinatorError
from backend.models import HoldoutSample, JobKind, Project
from backend.services import sources
from backend.services.base import Services
from backend.services.configs import config_for, parse_config
from backend.services.importer import import_items
from backend.services.labelstudio import LabelStudio
from backend.services.labelstudio_client import LabelStudioError
from backend.services.reconcile import reconcile
from backend.services.rounds import current_round, open_round, version_name
from backend.services.training import record_version
from vl4pose.errors import CheckpointError
from vl4pose.skeletons import SKELETONS, get_skeleton

if TYPE_CHECKING:
    from vl4pose.registry import ModelRegistry

log = logging.getLogger(__name__)

SECRET_HEADER = "X-VL4Pose-Secret"
WEBHOOK_PATH = "/hooks/label-studio"
LABEL_POLICIES = ("annotations", "ground-truth", "ignore")
STRATEGIES = ACQUISITION_STRATEGIES
QUEUE_VIEW = "VL4Pose queue"
"""The Data Manager tab linking adds: ordered by the current model version's score (the strategy's queue order:
the likelihood score under ``vl4pose``, the rank under ``vl4pose_mix``). Label Studio's "Label All Tasks" button
sends the tab's selection, which makes it serve tasks in the tab's order instead of by uncertainty sampling; this
ordering keeps that stream in the queue order too."""
LEGACY_QUEUE_VIEWS = ("Lowest likelihood first",)
"""Titles the tab had before; a re-link finds the tab under them instead of adding a second one."""


@dataclass
class LinkRequest:
    """What to link. Give ``project_id`` to adopt an existing Label Studio project, ``images`` (a folder) or
    ``dataset`` + ``data`` to import images; ``labels`` says what existing labels become."""

    skeleton: str = "lsp14"
    title: str | None = None
    project_id: int | None = None
    images: str | None = None
    dataset: str | None = None
    data: str | None = None
    split: str | None = None
    image_dir: str | None = None
    labels: str = "annotations"
    limit: int | None = None
    holdout_dataset: str | None = None
    holdout_data: str | None = None
    holdout_split: str | None = None
    holdout_limit: int | None = None
    holdout_fraction: float | None = None
    round_budget: int | None = None
    strategy: str | None = None
    """Queue order (``STRATEGIES``); None: ``VL4POSE_ACQUISITION_STRATEGY`` for a new project, unchanged on re-link."""
    init_checkpoint: str | None = None
    image_import: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> "LinkRequest":
        """Validate a JSON body; raises :class:`CoordinatorError` naming the bad field."""
        if not isinstance(data, dict):
            raise CoordinatorError("the body must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise CoordinatorError(f"unknown fields {unknown}; allowed: {sorted(known)}")
        for name, value in data.items():
            kind = str(known[name].type)
            expected = (int,) if "int" in kind else (float, int) if "float" in kind else (str,)
            if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
                raise CoordinatorError(
                    f"field {name!r} must be {kind.replace(' | None', '')}, not {type(value).__name__}"
                )
        return cls(**data).validate()

    def validate(self) -> "LinkRequest":
        if self.skeleton not in SKELETONS:
            raise CoordinatorError(f"unknown skeleton {self.skeleton!r}; choose one of {sorted(SKELETONS)}")
        if self.labels not in LABEL_POLICIES:
            raise CoordinatorError(f"labels must be one of {list(LABEL_POLICIES)}, not {self.labels!r}")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise CoordinatorError(f"strategy must be one of {list(STRATEGIES)}, not {self.strategy!r}")
        if self.images and self.dataset:
            raise CoordinatorError("give either images (a folder) or dataset + data, not both")
        if bool(self.dataset) != bool(self.data):
            raise CoordinatorError("dataset and data go together (e.g. dataset=lspet, data=/path/to/lspet)")
        if bool(self.holdout_dataset) != bool(self.holdout_data):
            raise CoordinatorError("holdout_dataset and holdout_data go together")
        if self.project_id is None and not (self.images or self.dataset):
            raise CoordinatorError("nothing to link: give images or dataset + data, or project_id to adopt a project")
        for name in ("limit", "holdout_limit", "round_budget", "project_id"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CoordinatorError(f"{name} must be at least 1")
        if self.holdout_fraction is not None and not 0 <= self.holdout_fraction < 1:
            raise CoordinatorError("holdout_fraction must be in [0, 1)")
        if self.image_import not in (None, "auto", "local-files", "upload"):
            raise CoordinatorError("image_import must be auto, local-files or upload")
        return self


@dataclass
class LinkResult:
    project_id: int
    ls_project_id: int
    tasks_imported: int = 0
    annotations_imported: int = 0
    holdout_samples: int = 0
    image_source: str = ""
    ml_backend_id: int | None = None
    webhook_id: int | None = None
    view_id: int | None = None
    initial_version: str | None = None
    jobs: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _items(request: LinkRequest) -> list[sources.Item]:
    if request.images:
        items = sources.folder_items(Path(request.images))
    elif request.dataset:
        items = sources.dataset_items(request.dataset, request.data, request.split, request.skeleton, request.image_dir)
    else:
        return []
    return items[: request.limit] if request.limit else items


def _holdout_items(request: LinkRequest) -> list[sources.Item]:
    if not request.holdout_dataset:
        return []
    items = sources.dataset_items(
        request.holdout_dataset, request.holdout_data, request.holdout_split, request.skeleton, None
    )
    return items[: request.holdout_limit] if request.holdout_limit else items


def link_project(services: Services, request: LinkRequest) -> LinkResult:
    """Link (or re-link) a project; see the module docstring."""
    settings = services.settings
    skeleton = get_skeleton(request.skeleton)
    items, holdout = _items(request), _holdout_items(request)
    init = _check_checkpoint(request.init_checkpoint, skeleton) if request.init_checkpoint else None
    ls = services.ls()
    if request.project_id is not None:
        ls_project_id = request.project_id
        label_config = parse_config(ls.project(ls_project_id)["label_config"], skeleton)
    else:
        xml = config_for(skeleton)
        label_config = parse_config(xml, skeleton)
        ls_project_id = ls.create_project(request.title or f"VL4Pose {skeleton.name}", xml)
    warnings = (
        [f"the labelling config has no label for keypoints {label_config['missing']}"]
        if label_config["missing"]
        else []
    )
    mode = (
        sources.choose_import(items, request.image_import or settings.image_import, settings.label_studio_files_root)
        if items
        else "existing"
    )
    if request.labels == "ground-truth":
        holdout += [i for i in items if i.labelled]
        items = [i for i in items if not i.labelled]
    with services.db.session() as session:
        project = session.scalar(select(Project).where(Project.ls_project_id == ls_project_id))
        if project is None:
            project = Project(
                ls_project_id=ls_project_id,
                title=request.title or f"VL4Pose {skeleton.name}",
                skeleton=skeleton.name,
                round_budget=request.round_budget or settings.round_budget,
                validation_policy="share",
                label_config=label_config,
                image_source=mode,
                holdout_fraction=settings.holdout_fraction,
                strategy=request.strategy or settings.acquisition_strategy,
            )
            session.add(project)
        if request.strategy:
            project.strategy = request.strategy
        project.label_config = label_config
        if request.round_budget:
            project.round_budget = request.round_budget
        if request.holdout_fraction is not None:
            project.holdout_fraction = request.holdout_fraction
        session.flush()
        project_id = project.id
        added = _store_holdout(session, project, holdout)
        if added or session.scalar(select(HoldoutSample.id).where(HoldoutSample.project_id == project.id).limit(1)):
            project.validation_policy = "ground_truth"
        holdout_count = added
    result = LinkResult(project_id, ls_project_id, holdout_samples=holdout_count, image_source=mode, warnings=warnings)
    result.tasks_imported, result.annotations_imported = import_items(
        ls, settings, ls_project_id, items, label_config, mode, request.labels == "annotations"
    )
    registry = services.registry()
    if init is not None:
        result.initial_version = _publish_initial(services.db, registry, project_id, init)
    registry.link_project(ls_project_id, skeleton=skeleton.name)  # the ML backend serves linked projects
    _connect(services.db, ls, settings, project_id, ls_project_id, result)
    reconcile(services, project_id, close_rounds=False)  # imported annotations are recorded before round 1
    with services.db.session() as session:
        project = session.get(Project, project_id)
        first = current_round(session, project_id) is None
        round_ = open_round(session, project, None, []) if first else current_round(session, project_id)
        round_id = round_.id
    if result.initial_version and first:
        payload = {"version": result.initial_version}
        result.jobs.append(services.jobs.submit(JobKind.RANK, project_id, round_id, {**payload, "initial": True}))
        result.jobs.append(services.jobs.submit(JobKind.EVALUATE, project_id, None, payload))
    log.info("linked project %d (Label Studio %d): %s", project_id, ls_project_id, result)
    return result


def _check_checkpoint(path: str, skeleton) -> Path:
    from vl4pose.checkpoint import load_checkpoint  # deferred on purpose: loads torch (only when linking with one)

    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as exc:
        raise CoordinatorError(f"init checkpoint: {exc}") from None
    if checkpoint.skeleton.keypoints != skeleton.keypoints:
        raise CoordinatorError(
            f"init checkpoint {path} predicts skeleton {checkpoint.skeleton.name!r}, "
            f"the project uses {skeleton.name!r}"
        )
    return checkpoint.path


def _store_holdout(session, project: Project, items: list[sources.Item]) -> int:
    existing = set(session.scalars(select(HoldoutSample.sample_id).where(HoldoutSample.project_id == project.id)))
    rows = [r for r in sources.holdout_rows(items) if r["sample_id"] not in existing]
    session.add_all(HoldoutSample(project_id=project.id, **row) for row in rows)
    return len(rows)


def _publish_initial(db: Database, registry: ModelRegistry, project_id: int, folder: Path) -> str:
    with db.session() as session:
        version = version_name(session.get(Project, project_id), 0)
    registry.publish(folder, version, parent=None, make_current=False, initial_checkpoint=str(folder))
    record_version(db, registry, project_id, None, version, None, 0, {})
    return version


def _connect(
    db: Database, ls: LabelStudio, settings: Settings, project_id: int, ls_project_id: int, result: LinkResult
) -> None:
    """Register the ML backend and the webhook (once each) and switch on uncertainty sampling."""
    if settings.ml_backend_url:
        found = [
            b for b in ls.ml_backends(ls_project_id) if b["url"].rstrip("/") == settings.ml_backend_url.rstrip("/")
        ]
        auth = (settings.ml_basic_auth_user, settings.ml_basic_auth_password) if settings.ml_basic_auth_user else None
        try:
            if found:
                result.ml_backend_id = found[0]["id"]
                if auth:  # a backend connected before auth was on gets the credentials now
                    ls.set_ml_backend_auth(found[0]["id"], auth)
            else:
                title = result.initial_version or "vl4pose"
                args = (ls_project_id, settings.ml_backend_url, title)
                result.ml_backend_id = ls.add_ml_backend(*args, basic_auth=auth) if auth else ls.add_ml_backend(*args)
        except LabelStudioError as exc:
            result.warnings.append(f"ML backend not connected ({exc}); start it and link again")
    else:
        result.warnings.append("VL4POSE_ML_BACKEND_URL is not set: no ML backend connected")
    url = settings.public_url.rstrip("/") + WEBHOOK_PATH
    headers = {SECRET_HEADER: settings.webhook_secret}
    found = [h for h in ls.webhooks(ls_project_id) if h["url"] == url and h["project"] == ls_project_id]
    if found:
        ls.update_webhook(found[0]["id"], url, headers)
        result.webhook_id = found[0]["id"]
    else:
        result.webhook_id = ls.add_webhook(ls_project_id, url, headers)
    ls.update_project(ls_project_id, sampling="Uncertainty sampling")
    views = [v["id"] for v in ls.views(ls_project_id) if v["title"] in (QUEUE_VIEW, *LEGACY_QUEUE_VIEWS)]
    result.view_id = views[0] if views else ls.add_view(ls_project_id, QUEUE_VIEW, ["tasks:predictions_score"])
    with db.session() as session:
        project = session.get(Project, project_id)
        project.ml_backend_id, project.webhook_id = result.ml_backend_id, result.webhook_id
