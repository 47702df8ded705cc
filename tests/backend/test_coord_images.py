"""Task images: read from the local-files root when visible, else downloaded once and cached; pose rendering."""

from __future__ import annotations

import numpy as np
import pytest
from coord_fakes import SHARED_DATA, FakeLabelStudio

from backend.errors import CoordinatorError
from backend.services.images import ImageStore
from backend.services.labelstudio_client import LabelStudioUnavailable

URL = "/data/local-files/?d=lspet/images/im00001.jpg"


def test_local_files_are_read_in_place(tmp_path, lspet_dir):
    fake = FakeLabelStudio(SHARED_DATA)
    store = ImageStore(tmp_path / "cache", str(SHARED_DATA), lambda: fake, 10**7)
    assert store.get(URL) == (lspet_dir / "images" / "im00001.jpg").resolve() and fake.calls == []
    assert store.local_file("/data/local-files/?d=../../etc/passwd") is None  # never outside the root


def test_other_images_are_downloaded_once_and_cached(tmp_path, lspet_dir):
    fake = FakeLabelStudio(SHARED_DATA)
    store = ImageStore(tmp_path / "cache", None, lambda: fake, 10**7)
    first = store.get(URL)
    assert first.is_relative_to(tmp_path / "cache") and first.suffix == ".jpg"
    assert first.read_bytes() == (lspet_dir / "images" / "im00001.jpg").read_bytes()
    assert store.get(URL) == first and fake.calls == ["fetch"]
    missing, ok = store.get_many(["/data/upload/1/x-gone.jpg", URL])
    assert isinstance(missing, CoordinatorError) and "404" in str(missing) and ok == first
    fake.fail["fetch"] = 1
    with pytest.raises(LabelStudioUnavailable):  # a transient failure is raised for the job to retry
        store.get_many(["/data/local-files/?d=lspet/images/im00002.jpg"])


def test_the_pose_is_drawn_on_the_image(lspet_dir):
    import io

    from PIL import Image

    from backend.services.render import render_pose
    from vl4pose.skeletons import LSP14

    keypoints = np.tile([[30.0, 40.0]], (14, 1)) + np.arange(14)[:, None] * 5
    png = render_pose(
        lspet_dir / "images" / "im00001.jpg", (200, 200), keypoints, np.ones(14, bool), np.full(14, 0.5), LSP14
    )
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and max(image.size) <= 320
    blank = render_pose(None, (640, 480), keypoints, np.zeros(14, bool), np.zeros(14), LSP14)
    assert Image.open(io.BytesIO(blank)).size == (320, 240)
