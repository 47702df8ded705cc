"""``python -m backend``: link a project, run the worker or the web server, manage rounds, jobs and the database."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from backend.config import ACQUISITION_STRATEGIES, Settings, SettingsError
from backend.db import Database, current_revision, downgrade
from backend.errors import CoordinatorError
from backend.models import Job
from backend.runtime import build_services
from backend.services import reports
from backend.services.events import process_pending
from backend.services.export import export_dataset
from backend.services.linking import LinkRequest, link_project
from backend.services.reconcile import reconcile, reconcile_all_projects
from backend.services.rounds import close_round
from backend.web.app import create_app
from backend.worker import configure_logging, run_worker
from vl4pose.errors import VL4PoseError

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description="VL4Pose coordinator")
    sub = parser.add_subparsers(dest="command", required=True)

    link = sub.add_parser("link", help="create or adopt a Label Studio project and connect it")
    link.add_argument("--skeleton", default="lsp14", help="lsp14, mpii16, coco17 or hand21")
    link.add_argument("--title", help="Label Studio project title (new projects)")
    link.add_argument("--project-id", type=int, help="adopt this existing Label Studio project")
    link.add_argument("--images", help="a folder of images to import")
    link.add_argument("--dataset", help="import a dataset instead: lspet, lsp, coco or labelstudio")
    link.add_argument("--data", help="the dataset folder or file")
    link.add_argument("--split", help="split of the dataset (LSP split.json name, COCO train/val)")
    link.add_argument("--image-dir", help="images of a COCO or Label Studio export")
    link.add_argument(
        "--labels",
        default="annotations",
        choices=["annotations", "ground-truth", "ignore"],
        help="what existing labels become (default: annotations)",
    )
    link.add_argument("--limit", type=int, help="import at most this many images")
    link.add_argument("--holdout-dataset", help="a labelled dataset used as the fixed held-out set")
    link.add_argument("--holdout-data")
    link.add_argument("--holdout-split")
    link.add_argument("--holdout-limit", type=int)
    link.add_argument("--holdout-fraction", type=float, help="share of labelled tasks kept out of training")
    link.add_argument("--round-budget", type=int, help="labelled tasks per round")
    link.add_argument("--strategy", choices=ACQUISITION_STRATEGIES,
                      help="queue order (default VL4POSE_ACQUISITION_STRATEGY, vl4pose_mix)")
    link.add_argument("--init-checkpoint", help="a checkpoint folder published as version 0 and ranked at once")
    link.add_argument("--image-import", choices=["auto", "local-files", "upload"])
    link.add_argument("--json", action="store_true", help="print the result as JSON")

    worker = sub.add_parser("worker", help="run jobs (a huey consumer)")
    worker.add_argument("--threads", type=int, help="worker threads (default VL4POSE_WORKER_THREADS)")
    worker.add_argument("--no-periodic", action="store_true", help="do not run reconcile and recovery every minute")

    serve = sub.add_parser("serve", help="development web server (production: gunicorn 'backend:create_app()')")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8200)

    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("revision", nargs="?", default="head")

    for name, text in (
        ("close-round", "close the current round by hand and retrain"),
        ("reconcile", "read every annotation from Label Studio now"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument(
            "project", type=int, nargs="?" if name == "reconcile" else None, help="coordinator project id"
        )

    status = sub.add_parser("status", help="rounds, accuracy and jobs of a project (or list projects)")
    status.add_argument("project", type=int, nargs="?")
    status.add_argument("--json", action="store_true")

    export = sub.add_parser("export", help="write a project's labelled dataset (COCO, LSP or Label Studio JSON)")
    export.add_argument("--project", type=int, required=True, help="coordinator project id")
    export.add_argument("--format", required=True, help="coco, lsp (lsp14 projects) or labelstudio")
    export.add_argument("--out", required=True, help="a new folder, or a new .zip file")
    export.add_argument("--round", type=int, help="the dataset as it stood after this round (default: now)")
    export.add_argument("--no-sync", action="store_true", help="do not read Label Studio's annotations first")
    export.add_argument("--json", action="store_true", help="print the summary as JSON")

    jobs = sub.add_parser("jobs", help="list jobs or retry a failed one")
    jobs.add_argument("action", choices=["list", "retry", "recover"])
    jobs.add_argument("job", type=int, nargs="?")
    return parser


def _link(services, args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(LinkRequest)}
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    result = link_project(services, LinkRequest(**values).validate())
    if args.json:
        print(json.dumps(dataclasses.asdict(result), indent=2))
    else:
        print(
            f"linked Label Studio project {result.ls_project_id} as coordinator project {result.project_id}: "
            f"{result.tasks_imported} tasks ({result.annotations_imported} with labels, {result.image_source}), "
            f"{result.holdout_samples} held-out samples"
        )
        if result.initial_version:
            print(f"initial model {result.initial_version} published; ranking job(s) {result.jobs}")
        for warning in result.warnings:
            print(f"warning: {warning}")
    return 0


def _print_status(services, project: int | None, as_json: bool) -> int:
    with services.db.session() as session:
        data: Any = reports.project_report(session, project) if project else reports.list_projects(session)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    if project is None:
        for p in data:
            c = p["current_round"] or {}
            print(
                f"{p['id']:4d}  LS {p['ls_project_id']:<5d} {p['title'][:40]:40s} round {c.get('number', '-')} "
                f"{c.get('state', '')} {c.get('labelled', 0)}/{c.get('budget', '')}"
            )
        return 0
    print(
        f"{'round':>5s} {'state':10s} {'served by':14s} {'labelled':>9s} {'served PCK':>10s} {'fixes/task':>10s} "
        f"{'held-out PCK':>12s} {'close->ranked':>13s}"
    )
    for r in data["rounds"]:
        pct = lambda v: f"{100 * v:.1f}%" if v is not None else "-"  # noqa: E731
        secs = f"{r['close_to_ranked_s']:.0f} s" if r["close_to_ranked_s"] is not None else "-"
        fixes = f"{r['corrections_per_task']:.2f}" if r.get("corrections_per_task") is not None else "-"
        print(
            f"{r['number']:5d} {r['state']:10s} {str(r['model_version'] or '-'):14s} "
            f"{r['labelled']:4d}/{r['budget']:<4d} {pct(r['served_pck']):>10s} {fixes:>10s} {pct(r['holdout_pck']):>12s} "
            f"{secs:>13s}"
        )
    job = data["current_job"]
    if job:
        print(f"job {job['id']} {job['kind']} {job['state']} {100 * job['progress']:.0f}% {job['stage']}")
    for failure in data["failures"][:5]:
        print(f"failure: {failure['what']}: {failure['error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(require_secrets=args.command not in ("db", "status", "jobs", "export"))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    try:
        return _run(args, settings)
    except CoordinatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if isinstance(exc, VL4PoseError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "worker":
        run_worker(settings, args.threads, periodic=not args.no_periodic)
        return 0
    if args.command == "serve":
        create_app().run(host=args.host, port=args.port)
        return 0
    if args.command == "db":
        database = Database(settings.database_url)
        if args.action == "upgrade":
            database.upgrade(args.revision)
        elif args.action == "downgrade":
            downgrade(database.engine, args.revision)
        print(f"schema revision: {current_revision(database.engine)}")
        return 0
    services = build_services(settings)
    if args.command == "link":
        return _link(services, args)
    if args.command == "close-round":
        print(f"round closed; job {close_round(services.db, services.jobs, args.project)} queued")
        return 0
    if args.command == "reconcile":
        processed = process_pending(services.db, services.jobs)
        result = reconcile(services, args.project) if args.project else reconcile_all_projects(services)
        print(json.dumps({"events_processed": processed, "reconcile": result}, indent=2))
        return 0
    if args.command == "status":
        return _print_status(services, args.project, args.json)
    if args.command == "export":
        return _export(services, args)
    return _jobs(services, args)


def _export(services, args: argparse.Namespace) -> int:
    def progress(fraction: float, stage: str) -> None:
        log.info("export %3.0f%% %s", 100 * fraction, stage)

    sync = not args.no_sync
    if sync and args.round is None and not services.settings.label_studio_token:
        log.warning("VL4POSE_LABEL_STUDIO_TOKEN is not set: exporting what the coordinator has recorded, without "
                    "reading Label Studio's annotations first")
        sync = False
    summary = export_dataset(services, args.project, args.format, Path(args.out), args.round, progress=progress, sync=sync)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"exported {summary['annotations']} annotations of project {args.project} as {summary['format']} to "
            f"{summary['out']} in {summary['seconds']:.1f} s ({', '.join(summary['files'])})"
        )
    return 0


def _jobs(services, args: argparse.Namespace) -> int:
    if args.action == "retry":
        if args.job is None:
            raise CoordinatorError("give the id of the failed job to retry")
        print(f"job {services.jobs.retry(args.job)} queued again")
    elif args.action == "recover":
        print(f"re-queued: {services.jobs.recover()}")
    else:
        with services.db.session() as session:
            for job in session.scalars(select(Job).order_by(Job.id.desc()).limit(30)):
                s = reports.job_summary(job)
                print(
                    f"{s['id']:5d} {s['kind']:8s} {s['state']:9s} {100 * s['progress']:5.1f}% "
                    f"attempts {s['attempts']} {s['stage'][:60]} {s['error'] or ''}"
                )
    return 0
