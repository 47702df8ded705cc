"""``python -m stack start``: bring up the whole system on 127.0.0.1 and link a ready-to-label project.

Steps (each skipped when already done, so a second start only restarts what is not running):
1. credentials made once per storage folder (``<storage>/stack.json``, mode 0600);
2. the data: the demo (LSPET when present, else generated figures) or the user's ``--data``;
3. Label Studio starts (in a thread) while the starter model trains (round 0) when no model exists;
4. the ML backend, the coordinator and its worker start;
5. the project is linked once (the coordinator publishes the starter model as version 0 and ranks every task
   with it), and the start waits until round 1 is ranked and the ML backend serves that version;
6. the URLs and the login are printed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stack import demo
from stack.project import Coordinator, LinkSpec, ensure_ml_auth, job_progress_printer, link, ml_serves, round_ready
from stack.config import REPO, SERVICES, Secrets, StackConfig, StackError
from stack.services import running_pid, start_service
from stack.starter import StarterConfig, shipped_starter, train_starter
from vl4pose.atomic import write_atomic

DATASETS = ("lspet", "lsp", "coco", "labelstudio", "folder")


@dataclass
class StartOptions:
    """What ``start`` links. Without ``data`` it links the demo."""

    data: Path | None = None
    dataset: str = "folder"
    split: str | None = None
    image_dir: Path | None = None
    skeleton: str | None = None
    labels: str = "annotations"
    limit: int | None = None
    checkpoint: Path | None = None
    title: str | None = None
    round_budget: int | None = None


def storage_dir() -> Path:
    return Path(os.environ.get("VL4POSE_STACK_STORAGE") or REPO / "storage").resolve()


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a whole number") from None


def load_state(storage: Path) -> dict:
    path = storage / "stack.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def save_state(storage: Path, state: dict) -> None:
    """Write ``stack.json`` atomically; the file is created with mode 0600 (never readable by others, not even
    for a moment)."""
    storage.mkdir(parents=True, exist_ok=True)
    write_atomic(storage / "stack.json", json.dumps(state, indent=2), mode=0o600)


def migrate_registry(config: StackConfig, state: dict) -> str | None:
    """Per-project model versions for a storage from before them: every linked project is registered, and the
    old single ``models/CURRENT`` moves to the project whose version it names (``p<id>-v<n>``), else the active
    one. Returns the migrated version (None when nothing was to migrate)."""
    from vl4pose.registry import ModelRegistry  # deferred on purpose: it loads torch (vl4pose.checkpoint)

    registry = ModelRegistry(config.storage / "models")
    linked = [p for p in state.get("projects", {}).values() if p.get("ls_project_id")]
    for project in linked:
        if not registry.is_linked(project["ls_project_id"]):
            registry.link_project(project["ls_project_id"])
    pointer = registry.root / "CURRENT"
    if not pointer.is_file():
        return None
    legacy = pointer.read_text().strip()
    owner = next((p for p in linked if legacy.startswith(f"p{p.get('project_id')}-")), None)
    owner = owner or state.get("projects", {}).get(state.get("active", ""))
    if not owner:
        return None
    return registry.migrate_legacy_current(owner["ls_project_id"])


def stack_config(storage: Path, state: dict, default_root: Path | None = None) -> StackConfig:
    """The configuration of the system in ``storage`` (ports from ``VL4POSE_*_PORT``; credentials from the state)."""
    if "secrets" not in state:
        state["secrets"] = dataclasses.asdict(Secrets.generate())
    root = os.environ.get("VL4POSE_FILES_ROOT") or state.get("files_root") or str(default_root or storage)
    state["files_root"] = str(Path(root).resolve())
    ports = {
        "labelstudio": _int_env("VL4POSE_LS_PORT", 8080),
        "ml": _int_env("VL4POSE_ML_PORT", 9090),
        "coordinator": _int_env("VL4POSE_COORDINATOR_PORT", 8200),
    }
    secrets = Secrets(**state["secrets"])
    state["secrets"] = dataclasses.asdict(secrets)  # credentials added since (the ML backend's) are kept too
    return StackConfig(storage, secrets, Path(state["files_root"]), ports,
                       torch_threads=_int_env("VL4POSE_STACK_TORCH_THREADS", 0))


def _starter_config() -> StarterConfig:
    threads = _int_env("VL4POSE_STACK_TORCH_THREADS", 0)
    if threads:
        import torch  # deferred on purpose: only to set the starter's threads

        torch.set_num_threads(threads)
    return StarterConfig(
        preset=os.environ.get("VL4POSE_STARTER_PRESET") or "cpu",
        epochs=_int_env("VL4POSE_STARTER_EPOCHS", 8),
        steps_per_epoch=_int_env("VL4POSE_STARTER_STEPS", 0),
    )


def demo_link(storage: Path) -> tuple[str, LinkSpec, demo.DemoSet]:
    """The demo project: its key, what to link, and the data set (the starter trains on its seed labels)."""
    source = demo.demo_set(storage, tasks=_int_env("VL4POSE_DEMO_TASKS", 200))
    spec = LinkSpec(
        f"VL4Pose demo ({source.name})",
        {"dataset": "lspet", "data": source.data, "split": "pool", "limit": source.tasks, "labels": "ignore",
         "holdout_dataset": "lspet", "holdout_data": source.data, "holdout_split": "test",
         "holdout_limit": source.holdout, "round_budget": _int_env("VL4POSE_DEMO_ROUND_BUDGET", 20)},
    )
    return f"demo:{source.name}:{source.data}", spec, source


def user_link(options: StartOptions) -> tuple[str, LinkSpec]:
    if options.dataset not in DATASETS:
        raise StackError(f"--dataset must be one of {', '.join(DATASETS)}, not {options.dataset!r}")
    data = options.data.resolve()
    if not data.exists():
        raise StackError(f"--data {data} does not exist")
    values: dict[str, object] = {"skeleton": options.skeleton, "limit": options.limit,
                                 "round_budget": options.round_budget}
    if options.dataset == "folder":
        values["images"] = data
    else:
        values.update(dataset=options.dataset, data=data, split=options.split, image_dir=options.image_dir,
                      labels=options.labels)
    key = f"user:{options.dataset}:{data}:{options.split or ''}"
    return key, LinkSpec(options.title or f"VL4Pose {data.name}"[:50], values)


def _starter_for_user(storage: Path, options: StartOptions) -> Path | None:
    """A round-0 model for the user's data: ``--checkpoint``, else (lsp14) the LSPET starter when LSPET exists."""
    if options.checkpoint is not None:
        return options.checkpoint.resolve()
    if (options.skeleton or ("coco17" if options.dataset == "coco" else "lsp14")) != "lsp14":
        return None
    shipped = shipped_starter("lsp14")
    if shipped is not None:
        return shipped
    source = demo.lspet_dir()
    if source is None:
        return None
    tasks = _int_env("VL4POSE_DEMO_TASKS", 200)
    return train_starter(source, storage / "starter" / "lspet", tasks, 300, _starter_config())


def start(options: StartOptions, out=sys.stdout) -> dict:
    """Start everything and link the project; returns what was printed as a dict (URLs, login, project)."""
    storage = storage_dir()
    storage.mkdir(parents=True, exist_ok=True)
    state = load_state(storage)
    if options.data is None:
        key, spec, source = demo_link(storage)
        root = source.data.parent if source.name == "lspet" else storage
    else:
        key, spec = user_link(options)
        source, root = None, None
    config = stack_config(storage, state, root)
    save_state(storage, state)
    out.write(f"[start] storage: {storage}\n")
    linked = state.get("projects", {}).get(key)

    errors: list[BaseException] = []
    thread = threading.Thread(target=_start_label_studio, args=(config, errors, out), daemon=True)
    thread.start()
    if not linked:
        if source is not None:
            shipped = shipped_starter("lsp14", source.tasks) if source.name == "lspet" else None
            if options.checkpoint:
                spec.init_checkpoint = options.checkpoint.resolve()
            elif shipped is not None:
                out.write(f"  round 0: the shipped human-pose starter ({shipped.relative_to(REPO)})\n")
                spec.init_checkpoint = shipped
            else:
                spec.init_checkpoint = train_starter(source.data, storage / "starter" / source.name, source.tasks,
                                                     source.seed, _starter_config())
        else:
            spec.init_checkpoint = _starter_for_user(storage, options)
    thread.join()
    if errors:
        raise errors[0]
    migrated = migrate_registry(config, state)
    if migrated:
        out.write(f"[start] model registry: {migrated} is now the current version of its project only\n")
    ensure_ml_auth(config, [p["ls_project_id"] for p in state.get("projects", {}).values() if p.get("ls_project_id")])
    for name in SERVICES[1:]:
        out.write(f"[start] {name}: {'running' if running_pid(config, name) else 'starting'}\n")
        out.flush()
        start_service(config, name)
    coordinator = Coordinator(config.url("coordinator"), config.secrets.api_token)
    if not linked:
        out.write(f"[start] linking the project: {spec.title}\n")
        out.flush()
        result = link(config, spec)
        linked = {"project_id": result["project_id"], "ls_project_id": result["ls_project_id"],
                  "initial_version": result["initial_version"], "title": spec.title, "truth": _truth(spec),
                  "view_id": result.get("view_id")}
        state.setdefault("projects", {})[key] = linked
        state["active"] = key
        save_state(storage, state)
        for warning in result.get("warnings", []):
            out.write(f"[start] warning: {warning}\n")
    state["active"] = key
    save_state(storage, state)
    version = linked["initial_version"]
    if version:
        out.write("[start] waiting for the first ranking of the queue\n")
        out.flush()
        coordinator.wait(linked["project_id"], round_ready(None), "ranking round 1", 1800, job_progress_printer(out))
        served = coordinator.project(linked["project_id"])["current_round"]["model_version"]
        ml_serves(config, served, linked["ls_project_id"])
    summary = describe(config, linked, coordinator)
    out.write(summary["text"])
    out.flush()
    return summary


def _truth(spec: LinkSpec) -> dict:
    """Where the simulated annotator finds the ground truth of the linked tasks (nothing for bare images)."""
    options = spec.options
    if not options.get("dataset"):
        return {}
    return {"dataset": options["dataset"], "data": str(options["data"]),
            "image_dir": str(options["image_dir"]) if options.get("image_dir") else None}


def _start_label_studio(config: StackConfig, errors: list, out) -> None:
    try:
        started = time.monotonic()
        start_service(config, "labelstudio")
        out.write(f"[start] labelstudio: ready on {config.url('labelstudio')} ({time.monotonic() - started:.0f} s)\n")
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def label_stream_url(ls: str, linked: dict) -> str:
    """Label Studio's "Label All Tasks" stream in the lowest-likelihood-first tab."""
    tab = f"tab={linked['view_id']}&" if linked.get("view_id") else ""
    return f"{ls}/projects/{linked['ls_project_id']}/data?{tab}labeling=1"


def describe(config: StackConfig, linked: dict, coordinator: Coordinator | None = None) -> dict:
    """URLs, login and the head of the queue, as text and as fields."""
    ls, s = config.url("labelstudio"), config.secrets
    first = None
    if coordinator is not None:
        queue = coordinator.get(f"/api/projects/{linked['project_id']}/queue", limit=1)
        first = (queue.get("queue") or [None])[0]
    lines = [
        "",
        "VL4Pose annotator is running on 127.0.0.1",
        f"  Label Studio   {ls}   login {s.ls_username} / {s.ls_password}",
        f"  Label now      {label_stream_url(ls, linked)}   ({linked['title']})",
        f"  Dashboard      {config.url('coordinator')}/projects/{linked['project_id']}   "
        f"log in with the API token (\"api_token\" in {config.storage / 'stack.json'}, readable by you only)",
        f"  ML backend     {config.url('ml')}/health",
    ]
    if first:
        lines.append(f"  First task     {first['task_id']} (first in the queue, score {first['score']:.3g}; log-likelihood "
                     f"{first['log_likelihood']:.3g}; model {first['model_version']}; {first['placed']} keypoints "
                     "pre-annotated)")
    lines += [f"  Logs           {config.log_dir}/", "  Stop with      bash scripts/stop.sh", ""]
    return {"text": "\n".join(lines) + "\n", "label_studio": ls, "coordinator": config.url("coordinator"),
            "ml_backend": config.url("ml"), "project": linked, "first_task": first,
            "username": s.ls_username, "password": s.ls_password, "api_token": s.api_token}
