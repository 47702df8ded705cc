"""Jobs: database-tracked units of work run by huey workers.

- :mod:`backend.jobs.context`: what a handler sees (:class:`~backend.jobs.context.JobContext`), the handler
  interface, worker identity;
- :mod:`backend.jobs.runner`: :class:`~backend.jobs.runner.JobRunner` (claim, run, retry, recover);
- :mod:`backend.jobs.queue`: the huey queue and its tasks;
- one module per job kind: :mod:`~backend.jobs.train`, :mod:`~backend.jobs.evaluate`, :mod:`~backend.jobs.rank`,
  :mod:`~backend.jobs.rank_shard`, :mod:`~backend.jobs.export`, :mod:`~backend.jobs.reconcile`.

The handlers call :mod:`backend.services`; :mod:`backend.runtime` puts runner, handlers and queue together.
"""
