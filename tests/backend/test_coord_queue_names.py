"""Queued huey messages name their task as ``<function module>.<task name>``: messages a coordinator queued in
SQLite or Redis before the queue moved to ``backend.jobs.queue`` must still find their task."""

from __future__ import annotations

# the names of every earlier coordinator (its tasks were defined in backend/queue.py)
STORED_NAMES = {
    "backend.queue.vl4pose.run_job",
    "backend.queue.vl4pose.process_events",
    "backend.queue.vl4pose.reconcile_all",
    "backend.queue.vl4pose.recover_jobs",
}


def test_the_queue_tasks_keep_the_names_older_messages_carry(make_app):
    services = make_app(queue="memory").extensions["vl4pose"]
    registry = services.huey._registry
    assert set(registry._registry) == STORED_NAMES
    message = registry.create_message(services.tasks.run_job.s(7))
    assert message.name == "backend.queue.vl4pose.run_job" and message.args == (7,)
    assert registry.string_to_task("backend.queue.vl4pose.run_job") is type(services.tasks.run_job.s(7))
