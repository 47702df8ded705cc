"""The ``train`` job: sync labels -> fine-tune -> evaluate on the held-out set -> publish.

Re-running a train job continues where it stopped: the label snapshot is kept in ``samples.json``,
the Trainer resumes from ``run/state.pt``, and publication is idempotent by version name; the version
becomes *current* only when ranking has put its predictions in Label Studio.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict

from backend.jobs.context import Handler, JobContext
from backend.models import JobKind, Project, Round, RoundState
from backend.services.base import Services
from backend.services.reconcile import reconcile
from backend.services.rounds import add_timing, reset_round, set_round_state
from backend.services.samples import clean, evaluate_version, labelled_records, records_to_samples, split_validation
from backend.services.training import calibration_summary, current_round_count, record_version, train_config
from vl4pose.skeletons import get_skeleton

log = logging.getLogger(__name__)


class TrainHandler(Handler):
    def run(self, ctx: JobContext) -> None:
        services, payload = ctx.services, ctx.payload
        version, parent = payload["version"], payload.get("parent")
        registry = services.registry()
        set_round_state(services.db, ctx.round_id, RoundState.TRAINING)
        if not registry.exists(version):
            started = time.monotonic()
            ctx.progress(0.0, "reading annotations from Label Studio", force=True)
            reconcile(services, ctx.project_id, close_rounds=False)
            checkpoint, train_images = self._train(ctx, parent)
            train_s = time.monotonic() - started
            set_round_state(services.db, ctx.round_id, RoundState.EVALUATING)
            ctx.progress(0.9, "evaluating on the held-out set", force=True)
            started = time.monotonic()
            metrics = evaluate_version(services.db, services.images, services.settings, ctx.project_id, checkpoint)
            add_timing(services.db, ctx.round_id, train_s=train_s, evaluate_s=time.monotonic() - started)
            ctx.progress(0.98, f"publishing {version}", force=True)
            registry.publish(
                checkpoint, version, parent=parent, make_current=False, train_images=train_images, **metrics
            )
        info = registry.info(version)
        metrics = {k: v for k, v in info.items() if k.startswith("holdout")}
        metrics.update(calibration_summary(ctx.dir / "run" / "best"))
        record_version(
            services.db, registry, ctx.project_id, ctx.round_id, version, parent, int(info.get("train_images", 0)),
            metrics,
        )
        with services.db.session() as session:
            round_ = session.get(Round, ctx.round_id)
            round_.metrics = clean(
                {
                    **(round_.metrics or {}),
                    "trained_version": version,
                    **metrics,
                    "train_images": info.get("train_images"),
                }
            )
            round_.state = RoundState.RANKING
        ctx.then(JobKind.RANK, {"version": version})

    def _train(self, ctx: JobContext, parent: str | None):
        # deferred on purpose: these load torch, which only a worker running a train job needs
        from vl4pose.checkpoint import load_checkpoint
        from vl4pose.models import preset
        from vl4pose.train import TrainConfig, Trainer

        services = ctx.services
        with services.db.session() as session:
            project = session.get(Project, ctx.project_id)
            skeleton = get_skeleton(project.skeleton)
            round_number = session.get(Round, ctx.round_id).number if ctx.round_id else 0
        snapshot = ctx.dir / "samples.json"
        if not snapshot.is_file():
            records = labelled_records(services.db, ctx.project_id, holdout=False)
            snapshot.write_text(json.dumps(records))
        records = json.loads(snapshot.read_text())
        ctx.progress(0.02, f"fetching {len(records)} labelled images", force=True)
        samples, unreadable = records_to_samples(services.images, records, skeleton.num_keypoints)
        train, val = split_validation(samples, services.settings.train_val_fraction)
        current = current_round_count(services.db, ctx.round_id, val)
        init = load_checkpoint(services.registry().path(parent)) if parent else None
        model_config = init.model_config if init is not None else preset(services.settings.train_preset)
        if "train" not in ctx.payload:
            ctx.save_payload(train=train_config(services.settings, round_number, list(init.heads) if init else []))
        fields = dict(ctx.payload["train"])
        fields["heads"] = tuple(fields.get("heads", ()))
        config = TrainConfig(**fields)
        ctx.progress(
            0.05,
            f"training on {len(train)} images ({len(val)} for validation, {current} of them from this round; "
            f"{unreadable} unreadable)",
            force=True,
        )

        def report(progress) -> None:
            if progress.seconds_left is not None:
                stage = (f"training epoch {progress.epoch + 1}, {progress.seconds_left / 60:.1f} min left of a "
                         f"{config.time_budget_s / 60:.0f} min budget")
            else:
                stage = f"training epoch {progress.epoch + 1}/{progress.epochs}"
            ctx.progress(0.05 + 0.85 * progress.fraction, stage if progress.step <= 1 else None)

        # under MIN_CALIBRATION_IMAGES the previous version's temperature is kept (vl4pose.calibrate)
        calibration = {"previous": init.calibration if init else None, "current_images": current}
        processes = services.settings.train_processes
        if processes > 1:  # data-parallel in child processes started by torchrun (vl4pose.launch)
            from vl4pose.launch import run_torchrun, write_spec  # deferred with the imports above

            spec = write_spec(
                ctx.dir / "spec.json", out=ctx.dir / "run", model=model_config.to_dict(), skeleton=skeleton.name,
                train=ctx.payload["train"], train_samples=train, val_samples=val,
                init=services.registry().path(parent) if parent else None,
                calibration={**calibration, "previous": asdict(init.calibration) if init else None},
                threads=services.settings.torch_threads or None,
            )
            run_torchrun(spec, processes, report)
            return ctx.dir / "run" / "best", len(train)
        trainer = Trainer(model_config, skeleton, config, ctx.dir / "run", init_from=init, callbacks=[report])
        trainer.calibration_options = calibration
        trainer.fit(train, val)
        return ctx.dir / "run" / "best", len(train)

    def failed(self, ctx: JobContext, message: str) -> None:
        set_round_state(ctx.services.db, ctx.round_id, RoundState.FAILED, f"training failed: {message}")

    def reset(self, services: Services, job_id: int) -> None:
        folder = services.job_dir(job_id)
        (folder / "samples.json").unlink(missing_ok=True)
        shutil.rmtree(folder / "run", ignore_errors=True)
        reset_round(services.db, job_id, RoundState.TRAINING)
