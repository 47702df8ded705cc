"""Coordinator exceptions. Messages say what went wrong and how to fix it, and never hold a secret."""

from __future__ import annotations


class CoordinatorError(Exception):
    """A failure the coordinator reports to users as is (HTTP 4xx body, CLI message, job error)."""

    status = 400
    code = "bad_request"


class TransientError(CoordinatorError):
    """A failure worth retrying later (a service is down); jobs retry it with a delay."""

    status = 503
    code = "unavailable"


class NotFound(CoordinatorError):
    status = 404
    code = "not_found"


class Conflict(CoordinatorError):
    status = 409
    code = "conflict"
