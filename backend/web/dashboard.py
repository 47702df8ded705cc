"""The dashboard for project leads: server-rendered pages, local static files, works offline."""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask import session as login_session

from backend.errors import CoordinatorError
from backend.services import inbox, reports
from backend.services.rounds import close_round
from backend.web.auth import check_csrf, csrf_token, is_authenticated, login
from backend.web.chart import accuracy_svg
from backend.web.converters import install

bp = Blueprint("dashboard", __name__)
bp.record_once(install)  # the <id:...> converter, before the routes below are bound


def services():
    return current_app.extensions["vl4pose"]


def page(view):
    """HTML views: send visitors without a session or token to the login form."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        if not is_authenticated():
            return redirect(url_for("dashboard.login_form", next=request.path))
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)

    return wrapper


@bp.app_context_processor
def inject() -> dict:
    return {"csrf_token": csrf_token}


@bp.get("/login")
def login_form():
    return render_template("login.html", next=request.args.get("next", "/"))


@bp.post("/login")
def login_submit():
    target = request.form.get("next") or "/"
    if not target.startswith("/") or target.startswith("//"):
        target = "/"
    if login(request.form.get("token", "")):
        return redirect(target)
    return render_template("login.html", next=target, error="That token is not the coordinator's API token."), 401


@bp.post("/logout")
@page
def logout():
    login_session.clear()
    return redirect(url_for("dashboard.login_form"))


@bp.get("/")
@page
def index():
    with services().db.session() as session:
        return render_template("index.html", projects=reports.list_projects(session))


@bp.get("/projects/<id:project_id>")
@page
def project(project_id: int):
    with services().db.session() as session:
        report = reports.project_report(session, project_id, queue_limit=12)
    report["training_budget"] = reports.training_budget(services().settings)
    return render_template("project.html", r=report, chart=accuracy_svg(report["accuracy"]))


@bp.post("/projects/<id:project_id>/close")
@page
def close(project_id: int):
    try:
        svc = services()
        job_id = close_round(svc.db, svc.jobs, project_id)
        flash(f"Round closed by hand; training job {job_id} queued.")
    except CoordinatorError as exc:
        flash(str(exc), "error")
    return redirect(url_for("dashboard.project", project_id=project_id))


def _back():
    """Back to the page the form was on (only our own project pages)."""
    back = request.form.get("back") or ""
    return redirect(back if back.startswith("/projects/") and "//" not in back else url_for("dashboard.index"))


@bp.post("/jobs/<id:job_id>/retry")
@page
def retry(job_id: int):
    try:
        services().jobs.retry(job_id)
        flash(f"Job {job_id} queued again.")
    except CoordinatorError as exc:
        flash(str(exc), "error")
    return _back()


@bp.post("/events/<id:event_id>/retry")
@page
def retry_event(event_id: int):
    try:
        svc = services()
        event = inbox.retry_event(svc.db, svc.tasks.process_events, event_id)
        reason = f" ({event['error']})" if event["error"] else "."
        flash(f"Webhook event {event_id} retried: now {event['state']}{reason}")
    except CoordinatorError as exc:
        flash(str(exc), "error")
    return _back()


@bp.post("/events/<id:event_id>/dismiss")
@page
def dismiss_event(event_id: int):
    try:
        inbox.dismiss_event(services().db, event_id)
        flash(f"Webhook event {event_id} dismissed; it will not be processed.")
    except CoordinatorError as exc:
        flash(str(exc), "error")
    return _back()
