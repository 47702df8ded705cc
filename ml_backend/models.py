"""The served models: per Label Studio project, the registry's current version of that project, loaded once
per process and swapped without a restart.

A request takes a :class:`ServedModel` snapshot and uses it to the end, so a swap never changes the
model under an in-flight request. A newly current version is noticed by a cheap look at the project's
``CURRENT`` file (at most once per ``poll_seconds``), loaded in a background thread while the old version
keeps serving, then swapped in under a lock. A version is loaded once however many projects it serves,
and dropped when no project is served it any more.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cachetools

from vl4pose.errors import CheckpointError, VL4PoseError
from vl4pose.predictor import Predictor, PredictorConfig
from vl4pose.registry import ModelRegistry
from vl4pose.skeletons import SKELETONS, Skeleton

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version (``version`` is the registry's name for it)."""

    version: str
    predictor: Predictor


class ModelService:
    """Loads ``ModelRegistry(models_dir).current(project)`` per project and follows it. Thread-safe."""

    def __init__(self, models_dir: Path, poll_seconds: float = 1.0, predictor_config: PredictorConfig | None = None
                 ) -> None:
        self.registry = ModelRegistry(models_dir)
        self.poll_seconds = poll_seconds
        self.predictor_config = predictor_config or PredictorConfig()
        self._loaded: dict[str, ServedModel] = {}     # version -> model
        self._serving: dict[str, str] = {}            # project -> version it is served now
        self._wanted: dict[str, tuple[float, str | None]] = {}  # project -> (checked at, current version)
        self._lock = threading.Lock()                 # guards the fields above
        self._load_lock = threading.Lock()            # one load at a time
        self._loading: set[str] = set()
        self._failed: dict[str, tuple[float, str]] = {}
        self._skeletons: dict[str, Skeleton] = {}

    # -- cheap queries ------------------------------------------------------------------------------
    def linked(self, project: str) -> bool:
        """The project is known to the registry (linked by the coordinator)."""
        return self.registry.is_linked(project)

    def loaded(self, project: str) -> ServedModel | None:
        """The model serving ``project`` right now, without looking at the registry."""
        with self._lock:
            version = self._serving.get(project)
            return self._loaded.get(version) if version else None

    def current_version(self, project: str) -> str | None:
        """The project's current version in the registry, read at most once per ``poll_seconds``."""
        now = time.monotonic()
        with self._lock:
            checked = self._wanted.get(project)
            if checked is not None and now - checked[0] < self.poll_seconds:
                return checked[1]
        wanted = self.registry.current(project)
        with self._lock:
            if checked is None or checked[1] != wanted:
                log.info("project %s: current model version is now %s", project, wanted)
            self._wanted[project] = (now, wanted)
        return wanted

    def skeleton(self, version: str) -> Skeleton:
        """The skeleton of a published version, read from its folder without loading the weights."""
        model = self._loaded.get(version)
        if model is not None:
            return model.predictor.skeleton
        if version not in self._skeletons:
            path = self.registry.path(version) / "skeleton.json"
            try:
                self._skeletons[version] = Skeleton.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise VL4PoseError(f"model version {version!r} has no readable skeleton at {path} ({exc}); "
                                   "publish it again") from exc
        return self._skeletons[version]

    def project_skeleton(self, project: str) -> Skeleton | None:
        """The skeleton the project was linked with (before it has a model version), if recorded."""
        name = self.registry.project_info(project).get("skeleton")
        return SKELETONS.get(name) if isinstance(name, str) else None

    def last_error(self, project: str) -> str | None:
        """Why the project's current version could not be loaded, if it could not."""
        checked = self._wanted.get(project)
        failure = self._failed.get(checked[1]) if checked and checked[1] else None
        return failure[1] if failure else None

    def status(self) -> dict[str, dict]:
        """Per linked project: current version, whether it serves, its skeleton and load error."""
        out = {}
        for project in self.registry.projects():
            model = self.loaded(project)
            out[project] = {"model_version": model.version if model else self.current_version(project),
                            "model_loaded": model is not None,
                            "skeleton": model.predictor.skeleton.name if model else None,
                            "model_error": self.last_error(project)}
        return out

    # -- serving ------------------------------------------------------------------------------------
    def get(self, project: str) -> ServedModel | None:
        """The model to serve ``project`` now.

        Loads the project's first model in this thread (the caller waits); a newer version loads in a
        background thread while this call returns the old one. None while the project has no version.
        """
        wanted = self.current_version(project)
        model = self.loaded(project)
        if wanted is None or (model is not None and model.version == wanted) or self._recently_failed(wanted):
            return model
        with self._lock:
            ready = self._loaded.get(wanted)
            if ready is not None:  # already loaded for another project
                self._swap(project, wanted)
                return ready
        if model is None:
            self._load(wanted)
            return self.loaded(project)
        self._load_in_background(wanted)
        return model

    def refresh_in_background(self, project: str | None = None) -> None:
        """Start loading the current version of ``project`` (every linked project when None); never blocks."""
        for key in [project] if project is not None else self.registry.projects():
            try:
                wanted = self.current_version(key)
            except CheckpointError:
                continue
            model = self.loaded(key)
            if wanted is not None and (model is None or model.version != wanted) and not self._recently_failed(wanted):
                self._load_in_background(wanted)

    def wait_for(self, project: str, version: str, timeout: float = 60.0) -> ServedModel | None:
        """Block until ``version`` serves ``project`` (or ``timeout`` passes); for start-up scripts and tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                self._wanted.pop(project, None)
            model = self.get(project)
            if model is not None and model.version == version:
                return model
            time.sleep(0.05)
        return self.loaded(project)

    # -- loading ------------------------------------------------------------------------------------
    def _recently_failed(self, version: str) -> bool:
        failure = self._failed.get(version)
        return failure is not None and time.monotonic() - failure[0] < RETRY_FAILED_SECONDS

    def _swap(self, project: str, version: str) -> None:
        """Serve ``version`` to ``project`` and drop versions no project is served (caller holds the lock)."""
        previous = self._serving.get(project)
        self._serving[project] = version
        for old in set(self._loaded) - set(self._serving.values()):
            del self._loaded[old]
        log.info("project %s: serving model version %s%s", project, version,
                 f", replacing {previous}" if previous and previous != version else "")

    def _load_in_background(self, version: str) -> None:
        with self._lock:
            if version in self._loading:
                return
            self._loading.add(version)
        threading.Thread(target=self._load, args=(version,), name=f"load-model-{version}", daemon=True).start()

    def _load(self, version: str) -> None:
        try:
            with self._load_lock:
                if version not in self._loaded:
                    started = time.monotonic()
                    try:
                        predictor = Predictor(self.registry.path(version), self.predictor_config)
                    except Exception as exc:  # noqa: BLE001 - a bad version must never stop the serving ones
                        message = str(exc) if isinstance(exc, VL4PoseError) else f"{type(exc).__name__}: {exc}"
                        self._failed[version] = (time.monotonic(), f"model version {version}: {message}"[:500])
                        log.error("cannot load model version %s (the projects keep their current model): %s",
                                  version, exc)
                        return
                    with self._lock:
                        self._loaded[version] = ServedModel(version, predictor)
                        self._failed.pop(version, None)
                    log.info("loaded model version %s (skeleton %s) in %.2f s", version, predictor.skeleton.name,
                             time.monotonic() - started)
                with self._lock:
                    for project, (_, wanted) in list(self._wanted.items()):
                        if wanted == version and self._serving.get(project) != version:
                            self._swap(project, version)
        finally:
            with self._lock:
                self._loading.discard(version)


class LRUCache:
    """A small thread-safe least-recently-used cache (values computed outside the lock): a
    :class:`cachetools.LRUCache` (which is not thread-safe itself) behind a lock. ``size`` >= 1 entries
    (``VL4POSE_INTERACTIVE_CACHE_SIZE`` is checked to be positive)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: cachetools.LRUCache[Hashable, object] = cachetools.LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
        """(value, hit): the cached value for ``key`` (now the most recently used), or ``compute()`` stored under
        it (the least recently used entry goes when the cache is full)."""
        with self._lock:
            if key in self._items:
                return self._items[key], True  # type: ignore[return-value]
        value = compute()
        with self._lock:
            self._items[key] = value
        return value, False

    def __len__(self) -> int:
        return len(self._items)
