"""The coordinator's services: functions over the database, Label Studio and the model registry.

Each function receives what it uses as arguments, usually the :class:`backend.services.base.Services` record that
the composition root (:mod:`backend.runtime`) builds once per process. No service imports the job runner, the
queue, a job handler or the composition root: jobs (:mod:`backend.jobs`) call services, never the other way round
(the ``rank_shard`` steps take the job's :class:`~backend.jobs.context.JobContext`, the one exception, and
reconcile uses its worker identity). Checked by ``tests/architecture/test_backend_layers.py``.
"""
