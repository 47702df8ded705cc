"""Settings: read once from VL4POSE_* variables, converted, checked, and all documented."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from ml_helpers import REPO

from ml_backend.config import MLBackendConfig, env_name, load_config
from ml_backend.routes import EXTENSION
from vl4pose.errors import ConfigError


def test_authentication_is_required_by_default():
    with pytest.raises(ConfigError, match="VL4POSE_ML_BASIC_AUTH_USER and VL4POSE_ML_BASIC_AUTH_PASSWORD"):
        load_config({})
    with pytest.raises(ConfigError, match="VL4POSE_ML_AUTH=none but"):
        load_config({"VL4POSE_ML_AUTH": "none", "VL4POSE_ML_BASIC_AUTH_USER": "u",
                     "VL4POSE_ML_BASIC_AUTH_PASSWORD": "p"})
    with pytest.raises(ConfigError, match="'basic' .* or 'none'"):
        load_config({"VL4POSE_ML_AUTH": "token"})


def test_defaults_without_environment_but_the_credentials():
    config = load_config({"VL4POSE_ML_BASIC_AUTH_USER": "u", "VL4POSE_ML_BASIC_AUTH_PASSWORD": "p"})
    assert config == MLBackendConfig(basic_auth_user="u", basic_auth_password="p")
    assert config.models_dir == Path("storage/models") and config.image_cache_dir == Path("storage/image_cache")
    assert config.auth_enabled and not config.forwarding_enabled
    assert config.fetch_deadline == 30.0 and config.fetch_allow_hosts == () and config.fetch_allow_networks == ()
    assert not load_config({"VL4POSE_ML_AUTH": "none"}).auth_enabled


def test_fetch_allow_lists_are_read_and_checked():
    config = load_config({"VL4POSE_ML_AUTH": "none", "VL4POSE_FETCH_ALLOW_HOSTS": "Images.LAN, 127.0.0.1:9000",
                          "VL4POSE_FETCH_ALLOW_NETWORKS": "10.0.0.0/8,::1"})
    assert config.fetch_allow_hosts == ("images.lan", "127.0.0.1:9000")
    assert config.fetch_allow_networks == ("10.0.0.0/8", "::1")
    with pytest.raises(ConfigError, match="VL4POSE_FETCH_ALLOW_NETWORKS.*not an IP network"):
        load_config({"VL4POSE_ML_AUTH": "none", "VL4POSE_FETCH_ALLOW_NETWORKS": "intranet"})


def test_environment_values_are_converted():
    config = load_config({
        "VL4POSE_MODELS_DIR": "/srv/models", "VL4POSE_ML_BASIC_AUTH_USER": "u", "VL4POSE_ML_BASIC_AUTH_PASSWORD": "p",
        "VL4POSE_COORDINATOR_URL": "http://127.0.0.1:5000", "VL4POSE_WEBHOOK_SECRET": "s",
        "VL4POSE_MAX_IMAGE_BYTES": "1000", "VL4POSE_FETCH_TIMEOUT": "2.5", "VL4POSE_PRELOAD_MODEL": "false",
        "VL4POSE_WEBHOOK_ACTIONS": "start_training, annotation_created", "VL4POSE_LABEL_STUDIO_URL": "",
        "UNRELATED": "x",
    })
    assert config.models_dir == Path("/srv/models")
    assert config.auth_enabled and config.forwarding_enabled
    assert config.max_image_bytes == 1000 and config.fetch_timeout == 2.5 and config.preload_model is False
    assert config.webhook_actions == ("START_TRAINING", "ANNOTATION_CREATED")
    assert config.label_studio_url is None  # empty means unset


@pytest.mark.parametrize("environ,fragment", [
    ({"VL4POSE_MAX_IMAGE_BYTES": "lots"}, "VL4POSE_MAX_IMAGE_BYTES"),
    ({"VL4POSE_FETCH_TIMEOUT": "0"}, "VL4POSE_FETCH_TIMEOUT"),
    ({"VL4POSE_PRELOAD_MODEL": "perhaps"}, "VL4POSE_PRELOAD_MODEL"),
    ({"VL4POSE_ML_BASIC_AUTH_USER": "u"}, "VL4POSE_ML_BASIC_AUTH_PASSWORD"),
    ({"VL4POSE_COORDINATOR_URL": "http://127.0.0.1:1"}, "VL4POSE_WEBHOOK_SECRET"),
    ({"VL4POSE_COORDINATOR_URL": "127.0.0.1:1", "VL4POSE_WEBHOOK_SECRET": "s"}, "http://"),
    ({"VL4POSE_BOX_PASSES": "0"}, "VL4POSE_BOX_PASSES must be at least 1"),
    ({"VL4POSE_BOX_TOLERANCE": "-1"}, "VL4POSE_BOX_TOLERANCE at least 0"),
    ({"VL4POSE_CLICK_MEMORY_SECONDS": "-5"}, "VL4POSE_CLICK_MEMORY_SECONDS must be >= 0"),
])
def test_invalid_settings_name_the_variable(environ, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config({"VL4POSE_ML_AUTH": "none", **environ} if "AUTH" not in str(environ) else environ)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="unknown ML backend setting"):
        load_config({"VL4POSE_ML_AUTH": "none"}, {"no_such_setting": 1})


def test_secrets_do_not_appear_in_the_config_repr():
    config = load_config({"VL4POSE_ML_BASIC_AUTH_USER": "u", "VL4POSE_ML_BASIC_AUTH_PASSWORD": "hunter2",
                          "VL4POSE_COORDINATOR_URL": "http://x", "VL4POSE_WEBHOOK_SECRET": "sesame",
                          "VL4POSE_LABEL_STUDIO_TOKEN": "tok-123"})
    assert not {"hunter2", "sesame", "tok-123"} & set(repr(config).replace("'", " ").replace(",", " ").split())


def test_every_setting_is_documented():
    doc = (REPO / "docs" / "ML_BACKEND.md").read_text()
    missing = [env_name(f.name) for f in dataclasses.fields(MLBackendConfig) if f"`{env_name(f.name)}`" not in doc]
    assert not missing, f"document these in docs/ML_BACKEND.md: {missing}"


def test_create_app_reads_the_environment(monkeypatch, tmp_path):
    from ml_backend import create_app

    monkeypatch.setenv("VL4POSE_MODELS_DIR", str(tmp_path / "m"))
    monkeypatch.setenv("VL4POSE_ML_STATE_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("VL4POSE_MAX_REQUEST_BYTES", "12345")
    monkeypatch.setenv("VL4POSE_PRELOAD_MODEL", "0")
    monkeypatch.setenv("VL4POSE_ML_AUTH", "none")
    monkeypatch.setenv("VL4POSE_BOX_PASSES", "6")
    monkeypatch.setenv("VL4POSE_BOX_TOLERANCE", "0.05")
    monkeypatch.setenv("VL4POSE_BLAZEPOSE", "yes")
    monkeypatch.setenv("VL4POSE_BLAZEPOSE_PYTHON", sys.executable)  # start-up checks that it exists; nothing runs it
    app = create_app()
    assert app.config["MAX_CONTENT_LENGTH"] == 12345
    served = app.extensions[EXTENSION].models.predictor_config  # the person finding the served poses get
    assert (served.box_passes, served.box_tolerance, served.blazepose) == (6, 0.05, True)
    assert app.test_client().get("/health").json == {"status": "UP", "model_class": "VL4Pose", "projects": {}}


def test_importing_the_package_stays_light():
    import subprocess
    import sys

    code = "import sys, ml_backend; print(sorted(m for m in ('torch', 'flask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_blazepose_without_its_interpreter_is_refused_at_start_up(tmp_path, monkeypatch):
    monkeypatch.setenv("VL4POSE_BLAZEPOSE_PYTHON", str(tmp_path / "missing" / "python"))  # read by vl4pose.blazepose
    with pytest.raises(ConfigError, match="setup.sh --blazepose"):
        load_config({"VL4POSE_ML_AUTH": "none", "VL4POSE_BLAZEPOSE": "on"})
