"""The coordinator's services: functions over the database, Label Studio and the model registry.

Each function receives the parts it uses as arguments (the :class:`~backend.db.Database`, the Label Studio adapter,
the :class:`~backend.services.images.ImageStore`, the settings, the model registry, the job runner seen as a
:class:`~backend.services.base.JobQueue`); the jobs and the web layer take them out of the
:class:`~backend.services.base.Services` record that the composition root (:mod:`backend.runtime`) builds once per
process. Three use cases that need most of it still take the record: ``linking.link_project``,
``reconcile.reconcile`` (and ``reconcile_all_projects``) and ``export.export_dataset``.

No service imports the job runner, the queue, a job handler or the composition root: jobs (:mod:`backend.jobs`)
call services, never the other way round (the ``rank_shard`` steps take the job's
:class:`~backend.jobs.context.JobContext`, the one exception, and reconcile uses its worker identity).
Checked by ``tests/architecture/test_layers.py``.
"""
