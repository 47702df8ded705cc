"""The app factory: settings read once from the environment, services built, blueprint registered."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from flask import Flask
from PIL import Image

from ml_backend.clickmemory import ClickMemory
from ml_backend.config import MLBackendConfig, load_config
from ml_backend.errors import register_error_handlers
from ml_backend.images import FetchLimits, ImageFetcher
from ml_backend.models import LRUCache, ModelService
from ml_backend.predictions import PredictionService
from ml_backend.projects import ProjectStore
from ml_backend.routes import EXTENSION, Services, bp
from ml_backend.webhooks import WebhookForwarder
from vl4pose.fetch import AddressPolicy, parse_networks
from vl4pose.predictor import PredictorConfig

log = logging.getLogger(__name__)

PROJECTS_FILE = "projects.json"
CLICKS_DIR = "clicks"


def build_services(config: MLBackendConfig) -> Services:
    """The long-lived objects of one process (model, image cache, project store, webhook forwarder)."""
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < config.max_image_pixels:
        Image.MAX_IMAGE_PIXELS = config.max_image_pixels  # Pillow's own bomb check never refuses below our limit
    models = ModelService(config.models_dir, config.model_poll_seconds,
                          PredictorConfig(max_pixels=config.max_image_pixels, box_passes=config.box_passes,
                                          box_tolerance=config.box_tolerance, blazepose=config.blazepose))
    policy = AddressPolicy(frozenset(), frozenset(config.fetch_allow_hosts), parse_networks(config.fetch_allow_networks))
    fetcher = ImageFetcher(config.image_cache_dir,
                           FetchLimits(config.max_image_bytes, config.max_image_pixels, config.fetch_timeout,
                                       config.image_cache_max_mb * 1024 * 1024, config.fetch_deadline),
                           workers=config.fetch_workers, policy=policy)
    projects = ProjectStore(config.state_dir / PROJECTS_FILE, config.label_studio_url, config.label_studio_token)
    predictions = PredictionService(models, fetcher, projects, LRUCache(config.interactive_cache_size),
                                    predict_chunk=config.predict_chunk, max_pixels=config.max_image_pixels,
                                    memory=ClickMemory(config.state_dir / CLICKS_DIR, config.click_memory_seconds))
    forwarder = None
    if config.coordinator_url and config.webhook_secret:
        forwarder = WebhookForwarder(config.coordinator_url, config.webhook_secret, config.webhook_timeout,
                                     config.webhook_actions)
    return Services(config, models, predictions, forwarder)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the ML backend app.

    Args:
        test_config: setting overrides by :class:`~ml_backend.config.MLBackendConfig` field name (tests);
            everything else comes from ``VL4POSE_*`` environment variables, read here once.

    Raises:
        ConfigError: a setting is invalid (the message names the variable).
    """
    config = load_config(os.environ, test_config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = build_services(config)
    app.register_blueprint(bp)
    register_error_handlers(app)
    if config.preload_model:
        app.extensions[EXTENSION].models.refresh_in_background()
    log.info("ML backend ready: models %s (%d linked project(s)), image cache %s, basic auth %s, forwarding to %s",
             config.models_dir, len(app.extensions[EXTENSION].models.registry.projects()), config.image_cache_dir,
             "on" if config.auth_enabled else "OFF (VL4POSE_ML_AUTH=none)", config.coordinator_url or "nobody")
    return app
