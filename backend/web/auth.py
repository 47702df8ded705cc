"""Who may call the API and see the dashboard: a bearer token (``VL4POSE_API_TOKEN``) or a login session.

Comparisons are constant-time. A session is set by the login form (the same token) and signed with
``VL4POSE_SECRET_KEY``; forms that change state carry a CSRF token bound to the session.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from flask import current_app, request, session

from backend.errors import CoordinatorError


class Unauthorized(CoordinatorError):
    status = 401
    code = "unauthorized"


class Forbidden(CoordinatorError):
    status = 403
    code = "forbidden"


def same(given: str | None, expected: str) -> bool:
    """Constant-time string equality; an empty expectation never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def api_token() -> str:
    return current_app.extensions["vl4pose"].settings.api_token


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_authenticated() -> bool:
    return same(bearer(), api_token()) or session.get("auth") is True


def login(token: str) -> bool:
    if not same(token, api_token()):
        return False
    session.clear()
    session["auth"] = True
    session["csrf"] = secrets.token_urlsafe(24)
    return True


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    """State-changing requests made with the session cookie (not the bearer token) need the CSRF token."""
    if same(bearer(), api_token()):
        return
    given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
    if not same(given, session.get("csrf", "")):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again")


def require_auth(view: Callable[..., Any]) -> Callable[..., Any]:
    """API views: 401 JSON without a valid token or session; CSRF check for state changes by session."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not is_authenticated():
            raise Unauthorized("send 'Authorization: Bearer <VL4POSE_API_TOKEN>' or log in at /login")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            check_csrf()
        return view(*args, **kwargs)

    return wrapper
