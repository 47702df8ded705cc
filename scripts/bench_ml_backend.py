#!/usr/bin/env python
"""Latency of the ML backend over real HTTP on 127.0.0.1.

Starts the backend (gunicorn by default, or the development server) on a temporary registry holding
``--checkpoint`` as version ``bench``, serves LSPET images the way Label Studio does (token auth,
``/data/local-files/?d=...``), warms the image cache, then measures:

- ``/predict`` with 1 task and with 32 tasks whose images are already cached (p50, p95, mean),
- the interactive re-solve: ``/predict`` with a clicked keypoint on an image already analysed (its network
  output is cached; the default re-framing runs one more final pass on the window the click spans, cached per
  window), and the first click on a new image;
- a re-framing first click: on an image not clicked before, a click outside the automatic person crop (an image
  corner the crop leaves out, found with an in-process Predictor): the analysis (person-finding and final passes)
  and the final pass again on the window the click re-frames.

Prints a table on stderr and the figures as JSON on stdout::

    .venv/bin/python scripts/bench_ml_backend.py --checkpoint runs/cpu --threads 2 > ml_backend_latency.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the image server's request lines

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stack.process import BackendProcess  # noqa: E402
from vl4pose.data.sample import image_size  # noqa: E402

TOKEN = "bench-token-0123456789"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder or training run folder to serve")
    parser.add_argument("--images", default=str(REPO.parent / "shared" / "data" / "lspet" / "images"),
                        help="LSPET image folder (default ../shared/data/lspet/images)")
    parser.add_argument("--repeats", type=int, default=20, help="timed requests per measurement (default 20)")
    parser.add_argument("--batch", type=int, default=32, help="tasks in the batch measurement (default 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the backend (0 = torch default)")
    parser.add_argument("--server", choices=["gunicorn", "dev"], default="gunicorn")
    return parser.parse_args(argv)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(seconds: list[float]) -> dict:
    ms = [s * 1000.0 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.5), 2), "p95_ms": round(percentile(ms, 0.95), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "min_ms": round(min(ms), 2)}


def serve_images(folder: Path) -> tuple[str, object]:
    """A Label Studio look-alike for local files, in a thread of this process."""
    @Request.application
    def app(request: Request) -> Response:
        if request.headers.get("Authorization") != f"Token {TOKEN}":
            return Response("unauthorized", 401)
        path = folder / Path(request.args.get("d", "")).name
        return Response(path.read_bytes(), mimetype="image/jpeg") if path.is_file() else Response("not found", 404)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.port}", server


def start_backend(args: argparse.Namespace, tmp: Path):
    """Publish the checkpoint as version ``bench`` in a temporary registry and serve it."""
    # deferred on purpose: both load torch (~1.5 s), like main's import, so that --help answers at once
    from vl4pose.checkpoint import load_checkpoint
    from vl4pose.registry import ModelRegistry

    checkpoint = load_checkpoint(args.checkpoint)
    ModelRegistry(tmp / "models").publish(checkpoint.path, "bench", make_current=True, project="1")  # body_for's
    settings = {"models_dir": tmp / "models", "image_cache_dir": tmp / "cache", "state_dir": tmp / "state",
                "torch_threads": args.threads}
    return BackendProcess(tmp / "backend.log", settings, server=args.server).start(), checkpoint


def timed_post(session: requests.Session, url: str, body: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    response = session.post(url, json=body, timeout=300)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, response.json()


def body_for(numbers: list[int], label_config: str, context: dict | None = None) -> dict:
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d=lspet/images/im{n:05d}.jpg"}}
             for i, n in enumerate(numbers, 1)]
    return {"tasks": tasks, "project": "1.1", "label_config": label_config,
            "params": {"login": None, "password": None, "context": context}}


def click(label: str, x: float, y: float, size: tuple[int, int]) -> dict:
    return {"result": [{"original_width": size[0], "original_height": size[1], "image_rotation": 0,
                        "value": {"x": x, "y": y, "width": 0.75, "keypointlabels": [label]}, "is_positive": True,
                        "id": "bench", "from_name": "kp", "to_name": "image", "type": "keypointlabels"}]}


def measure(args: argparse.Namespace, url: str, images: Path, label_config: str, auth: tuple[str, str] | None = None
            ) -> dict:
    session = requests.Session()
    session.auth = auth  # the backend requires HTTP Basic auth (BackendProcess generates the credentials)
    numbers = list(range(1, args.batch + 1))
    batch_body = body_for(numbers, label_config)
    warm_s, answer = timed_post(session, f"{url}/predict", batch_body)  # fetches and caches every image
    predicted = sum(1 for entry in answer["results"] if entry)
    one = [timed_post(session, f"{url}/predict", body_for([numbers[i % len(numbers)]], label_config))[0]
           for i in range(args.repeats)]
    many = [timed_post(session, f"{url}/predict", batch_body)[0] for _ in range(max(3, args.repeats // 2))]
    size = image_size(images / "im00001.jpg")
    first_click = [timed_post(session, f"{url}/predict",
                              body_for([n], label_config, click("Neck", 50.0, 30.0, image_size(images / f"im{n:05d}.jpg"))))[0]
                   for n in numbers[1:6]]
    timed_post(session, f"{url}/predict", body_for([1], label_config, click("Neck", 50.0, 30.0, size)))
    resolve = [timed_post(session, f"{url}/predict",
                          body_for([1], label_config, click("Neck", 10.0 + 4.0 * (i % 20), 30.0, size)))[0]
               for i in range(args.repeats)]
    reframing = [timed_post(session, f"{url}/predict", body_for([n], label_config, click(
        "Right Ankle", *corner, image_size(images / f"im{n:05d}.jpg"))))[0]
        for n, corner in outside_corners(args.checkpoint, images, numbers[6:])[:args.repeats]]  # not clicked before
    return {"warm_up_batch_with_downloads_s": round(warm_s, 3), "tasks_predicted_in_batch": predicted,
            "predict_1_cached": summary(one), f"predict_{args.batch}_cached": summary(many),
            "interactive_resolve_cached_analysis": summary(resolve),
            "interactive_first_click_new_image": summary(first_click),
            "interactive_reframing_click": summary(reframing) if reframing else None}


def outside_corners(checkpoint: str, images: Path, numbers: list[int]) -> list[tuple[int, tuple[float, float]]]:
    """(image number, (x, y) % of the image) of a corner outside the automatic person crop, where one is."""
    from vl4pose.predictor import Predictor

    predictor = Predictor(checkpoint)
    found = []
    for n, analysis in zip(numbers, predictor.analyse_batch([images / f"im{n:05d}.jpg" for n in numbers])):
        width, height = analysis.image_size
        x0, y0, x1, y1 = analysis.window.box()
        for x, y in ((1.0, 1.0), (99.0, 1.0), (1.0, 99.0), (99.0, 99.0)):
            px, py = x * width / 100.0, y * height / 100.0
            if not (x0 <= px <= x1 and y0 <= py <= y1):
                found.append((n, (x, y)))
                break
    return found


def table(figures: dict, batch: int) -> str:
    rows = [("/predict, 1 cached image", "predict_1_cached"),
            (f"/predict, {batch} cached images", f"predict_{batch}_cached"),
            ("a click on an analysed image", "interactive_resolve_cached_analysis"),
            ("interactive, first click on an image", "interactive_first_click_new_image"),
            ("interactive, first click outside the crop", "interactive_reframing_click")]
    lines = [f"{'measurement':42} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9}", "-" * 77]
    for title, key in rows:
        s = figures[key]
        if s is None:
            lines.append(f"{title:42} (no image with a corner outside its automatic crop)")
            continue
        lines.append(f"{title:42} {s['n']:>4} {s['p50_ms']:>9.1f} {s['p95_ms']:>9.1f} {s['mean_ms']:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # deferred on purpose: torch (~1.5 s to import) after the arguments, so that --help and usage errors answer at once
    import torch

    images = Path(args.images)
    if not (images / "im00001.jpg").is_file():
        print(f"LSPET images not found in {images}; pass --images", file=sys.stderr)
        return 2
    label_config = (REPO / "annotation_configs" / "lsp14.xml").read_text()
    image_url, image_server = serve_images(images)
    with tempfile.TemporaryDirectory(prefix="bench_ml_backend_") as tmp_name:
        backend, checkpoint = start_backend(args, Path(tmp_name))
        try:
            requests.post(f"{backend.url}/setup", json={"project": "1.1", "schema": label_config,
                                                        "hostname": image_url, "access_token": TOKEN},
                          auth=backend.auth, timeout=30).raise_for_status()
            figures = measure(args, backend.url, images, label_config, backend.auth)
        finally:
            backend.stop()
            image_server.shutdown()
    report = {"checkpoint": str(checkpoint.path), "skeleton": checkpoint.skeleton.name,
              "model": checkpoint.model_config.to_dict(), "server": args.server,
              "torch_threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}
    print(table(figures, args.batch), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
