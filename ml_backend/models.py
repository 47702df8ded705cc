"""The served model: the registry's current version, loaded once per process, swapped without a restart.

A request takes a :class:`ServedModel` snapshot and uses it to the end, so a swap never changes the
model under an in-flight request. A newly published version is noticed by a cheap look at the
registry's ``CURRENT`` file (at most once per ``poll_seconds``), loaded in a background thread while
the old version keeps serving, then swapped in under a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vl4pose.errors import VL4PoseError
from vl4pose.predictor import Predictor, PredictorConfig
from vl4pose.registry import ModelRegistry
from vl4pose.skeletons import Skeleton

log = logging.getLogger(__name__)

RETRY_FAILED_SECONDS = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version (``version`` is the registry's name for it)."""

    version: str
    predictor: Predictor


class ModelService:
    """Loads ``ModelRegistry(models_dir).current()`` and follows it. Thread-safe."""

    def __init__(self, models_dir: Path, poll_seconds: float = 1.0, predictor_config: PredictorConfig | None = None
                 ) -> None:
        self.registry = ModelRegistry(models_dir)
        self.poll_seconds = poll_seconds
        self.predictor_config = predictor_config or PredictorConfig()
        self._model: ServedModel | None = None
        self._lock = threading.Lock()          # guards the fields below
        self._load_lock = threading.Lock()     # one load at a time
        self._checked_at = float("-inf")
        self._wanted: str | None = None
        self._loading: str | None = None
        self._failed: dict[str, tuple[float, str]] = {}
        self._skeletons: dict[str, Skeleton] = {}

    # -- cheap queries ------------------------------------------------------------------------------
    @property
    def loaded(self) -> ServedModel | None:
        """The model serving right now, without looking at the registry (None before the first load)."""
        return self._model

    def current_version(self) -> str | None:
        """The registry's current version, read at most once per ``poll_seconds``."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < self.poll_seconds:
                return self._wanted
            self._checked_at = now
        wanted = self.registry.current()
        with self._lock:
            if wanted != self._wanted:
                log.info("registry %s: current model version is now %s", self.registry.root, wanted)
            self._wanted = wanted
        return wanted

    def skeleton(self, version: str) -> Skeleton:
        """The skeleton of a published version, read from its folder without loading the weights."""
        model = self._model
        if model is not None and model.version == version:
            return model.predictor.skeleton
        if version not in self._skeletons:
            path = self.registry.path(version) / "skeleton.json"
            try:
                self._skeletons[version] = Skeleton.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise VL4PoseError(f"model version {version!r} has no readable skeleton at {path} ({exc}); "
                                   "publish it again") from exc
        return self._skeletons[version]

    def last_error(self) -> str | None:
        """Why the current version could not be loaded, if it could not."""
        wanted = self._wanted
        failure = self._failed.get(wanted) if wanted else None
        return failure[1] if failure else None

    # -- serving ------------------------------------------------------------------------------------
    def get(self) -> ServedModel | None:
        """The model to serve now.

        Loads the first model in this thread (the caller waits); a newer version loads in a background
        thread while this call returns the old one. None while no version is published (or loadable).
        """
        wanted = self.current_version()
        model = self._model
        if wanted is None or (model is not None and model.version == wanted) or self._recently_failed(wanted):
            return model
        if model is None:
            self._load(wanted)
            return self._model
        self._load_in_background(wanted)
        return model

    def refresh_in_background(self) -> None:
        """Start loading the registry's current version if it is not the one serving (never blocks)."""
        wanted = self.current_version()
        model = self._model
        if wanted is not None and (model is None or model.version != wanted) and not self._recently_failed(wanted):
            self._load_in_background(wanted)

    def wait_for(self, version: str, timeout: float = 60.0) -> ServedModel | None:
        """Block until ``version`` serves (or ``timeout`` passes); for start-up scripts and tests."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                self._checked_at = float("-inf")
            model = self.get()
            if model is not None and model.version == version:
                return model
            time.sleep(0.05)
        return self._model

    # -- loading ------------------------------------------------------------------------------------
    def _recently_failed(self, version: str) -> bool:
        failure = self._failed.get(version)
        return failure is not None and time.monotonic() - failure[0] < RETRY_FAILED_SECONDS

    def _load_in_background(self, version: str) -> None:
        with self._lock:
            if self._loading is not None:
                return
            self._loading = version
        threading.Thread(target=self._load, args=(version,), name=f"load-model-{version}", daemon=True).start()

    def _load(self, version: str) -> None:
        try:
            with self._load_lock:
                model = self._model
                if model is not None and model.version == version:
                    return
                started = time.monotonic()
                try:
                    predictor = Predictor(self.registry.path(version), self.predictor_config)
                except Exception as exc:  # noqa: BLE001 - a bad version must never stop the serving one
                    message = str(exc) if isinstance(exc, VL4PoseError) else f"{type(exc).__name__}: {exc}"
                    self._failed[version] = (time.monotonic(), f"model version {version}: {message}"[:500])
                    log.error("cannot load model version %s (still serving %s): %s", version,
                              model.version if model else "nothing", exc)
                    return
                with self._lock:
                    self._model = ServedModel(version, predictor)
                    self._failed.pop(version, None)
                log.info("serving model version %s (skeleton %s), loaded in %.2f s%s", version,
                         predictor.skeleton.name, time.monotonic() - started,
                         f", replacing {model.version}" if model else "")
        finally:
            with self._lock:
                if self._loading == version:
                    self._loading = None


class LRUCache:
    """A small thread-safe least-recently-used cache (values computed outside the lock)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> tuple[T, bool]:
        """(value, hit): the cached value for ``key``, or ``compute()`` stored under it."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], True  # type: ignore[return-value]
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value, False

    def __len__(self) -> int:
        return len(self._items)
