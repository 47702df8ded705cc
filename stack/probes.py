"""Hostile probes of a running system (used by ``scripts/load_and_faults.py``): the ML backend's auth, a hostile
``/setup`` trying to collect Label Studio's token, a trickling image server, and a pixel bomb served by Label
Studio itself (the ML backend's own RSS is measured). Everything stays on 127.0.0.1."""

from __future__ import annotations

import http.server
import io
import re
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path

import requests

from stack.labelstudio import connect
from stack.config import StackConfig
from stack.services import running_pid


class Listener:
    """An HTTP server on a free 127.0.0.1 port recording (path, Authorization, Cookie) of every request;
    ``/slow.png`` sends one byte every ``trickle_s`` seconds, anything else a tiny PNG."""

    def __init__(self, trickle_s: float = 3.0) -> None:
        self.seen: list[tuple[str, str | None, str | None]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's interface
                outer.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Cookie")))
                body = bomb_png(8, 8)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        if self.path.startswith("/slow"):
                            time.sleep(trickle_s)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def bomb_png(width: int, height: int) -> bytes:
    """A grey PNG of zeros built row by row (a 12000 x 12000 one is ~140 KB and never held decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _predict(config: StackConfig, ls_project: int, xml: str, urls: list[str], auth=None) -> requests.Response:
    tasks = [{"id": i, "data": {"image": url}} for i, url in enumerate(urls, 1)]
    return requests.post(config.url("ml") + "/predict", auth=auth, timeout=120,
                         json={"tasks": tasks, "project": f"{ls_project}.0", "label_config": xml})


def probe_auth(config: StackConfig, ls_project: int, xml: str) -> dict:
    """Without credentials: /predict and /setup must answer 401, /health only ``UP``."""
    setup = requests.post(config.url("ml") + "/setup", json={"project": f"{ls_project}.0", "schema": xml}, timeout=10)
    health = requests.get(config.url("ml") + "/health", timeout=10).json()
    return {"predict_status": _predict(config, ls_project, xml, ["/x.png"]).status_code,
            "setup_status": setup.status_code, "health_keys": sorted(health)}


def probe_hostile_setup(config: StackConfig, ls_project: int, xml: str) -> dict:
    """A ``/setup`` moving the live project to a listener (with the backend's credentials, the worst case), then
    relative and absolute image URLs: no token and no cookie may arrive there. Label Studio's own setup is put
    back at the end (Label Studio also sends it again before every prediction fetch)."""
    attacker = Listener()
    try:
        hostile = requests.post(config.url("ml") + "/setup", auth=config.ml_auth, timeout=10,
                                json={"project": f"{ls_project}.0", "schema": xml, "hostname": attacker.url})
        answer = _predict(config, ls_project, xml, ["/data/upload/1/x.png", f"{attacker.url}/absolute.png"],
                          config.ml_auth)
        unlinked = requests.post(config.url("ml") + "/setup", auth=config.ml_auth, timeout=10,
                                 json={"project": "987654.0", "schema": xml, "hostname": attacker.url})
    finally:
        requests.post(config.url("ml") + "/setup", auth=config.ml_auth, timeout=10,
                      json={"project": f"{ls_project}.0", "schema": xml, "hostname": config.url("labelstudio"),
                            "access_token": config.secrets.ls_token})
        attacker.close()
    return {"setup_status": hostile.status_code, "predict_status": answer.status_code,
            "unlinked_setup_status": unlinked.status_code, "requests_at_attacker": len(attacker.seen),
            "credentials_at_attacker": sum(1 for _, auth, cookie in attacker.seen if auth or cookie)}


def probe_slow_image(config: StackConfig, ls_project: int, xml: str) -> dict:
    """A server trickling one byte every 3 s: refused at once as an internal address (default), or cut at
    ``VL4POSE_FETCH_DEADLINE`` when 127.0.0.1 is allow-listed; /health must keep answering meanwhile."""
    slow = Listener(trickle_s=3.0)
    try:
        started = time.monotonic()
        answers: list[requests.Response] = []
        threads = [threading.Thread(target=lambda: answers.append(
            _predict(config, ls_project, xml, [f"{slow.url}/slow{i}.png"], config.ml_auth))) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        health_started = time.monotonic()
        health = requests.get(config.url("ml") + "/health", timeout=10).status_code
        health_s = time.monotonic() - health_started
        for thread in threads:
            thread.join(120)
        elapsed = time.monotonic() - started
    finally:
        slow.close()
    return {"requests": 4, "statuses": sorted(a.status_code for a in answers), "wall_s": round(elapsed, 1),
            "connections_at_server": len(slow.seen), "health_status_meanwhile": health,
            "health_s_meanwhile": round(health_s, 2)}


def _ml_worker_rss_mb(config: StackConfig) -> float | None:
    master = running_pid(config, "ml")
    if master is None:
        return None
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    pid = int(children[0]) if children else master
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def probe_pixel_bomb(config: StackConfig, ls_project: int, xml: str, good_url: str) -> dict:
    """A 12000 x 12000 PNG uploaded to a scratch Label Studio project (so it comes from Label Studio's own
    origin), predicted next to a good task of the live project: the bomb's task gets ``[]``, the good one its
    predictions, and the ML backend's worker RSS must not grow by 50 MB."""
    ls = connect(config.url("labelstudio"), config.secrets.ls_token, timeout=120.0)
    scratch = ls.request_json("create a scratch project", "POST", "/api/projects/",
                              json={"title": f"bomb probe {uuid.uuid4().hex[:6]}"})
    try:
        upload = ls.request("upload the bomb", "POST", f"/api/projects/{scratch['id']}/import",
                            files={"file": ("bomb.png", io.BytesIO(bomb_png(12000, 12000)), "image/png")})
        task = ls.task_page(scratch["id"], 1, 1)[0][0]
        bomb_url = next(iter(task["data"].values()))
        _predict(config, ls_project, xml, [good_url], config.ml_auth)  # warm: the model is loaded and has run
        before = _ml_worker_rss_mb(config)
        answer = _predict(config, ls_project, xml, [bomb_url, good_url], config.ml_auth)
        after = _ml_worker_rss_mb(config)
    finally:
        ls.request("delete the scratch project", "DELETE", f"/api/projects/{scratch['id']}/")
        ls.close()
    results = answer.json().get("results", []) if answer.status_code == 200 else []
    return {"upload_status": upload.status_code, "predict_status": answer.status_code,
            "bomb_task_empty": bool(results) and results[0] == [], "good_task_predicted": len(results) > 1 and
            bool(results[1]), "rss_before_mb": round(before or 0, 1), "rss_after_mb": round(after or 0, 1),
            "rss_growth_mb": round((after or 0) - (before or 0), 1)}


def run_probes(config: StackConfig, ls_project: int, xml: str, good_url: str) -> tuple[dict, dict]:
    """Every probe, and the checks that must hold."""
    out = {"auth": probe_auth(config, ls_project, xml), "hostile_setup": probe_hostile_setup(config, ls_project, xml),
           "slow_image": probe_slow_image(config, ls_project, xml),
           "pixel_bomb": probe_pixel_bomb(config, ls_project, xml, good_url)}
    a, h, s, b = out["auth"], out["hostile_setup"], out["slow_image"], out["pixel_bomb"]
    checks = {
        "ml_auth_required": a["predict_status"] == 401 and a["setup_status"] == 401
        and a["health_keys"] == ["model_class", "status"],
        "no_credential_to_a_foreign_origin": h["credentials_at_attacker"] == 0 and h["predict_status"] == 200
        and h["unlinked_setup_status"] == 404,
        "slow_image_bounded": s["statuses"] == [200] * 4 and s["wall_s"] < 45 and s["health_status_meanwhile"] == 200,
        "pixel_bomb_bounded": b["predict_status"] == 200 and b["bomb_task_empty"] and b["good_task_predicted"]
        and b["rss_growth_mb"] < 50,
    }
    return out, checks
