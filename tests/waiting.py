"""Polling for the tests: wait until something becomes true, or fail saying what did not happen."""

from __future__ import annotations

import time


def wait_for(condition, timeout: float, what: str, every: float = 0.5):
    """Call ``condition`` every ``every`` seconds until it returns something truthy, and return that;
    an AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
