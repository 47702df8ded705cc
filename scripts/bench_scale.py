#!/usr/bin/env python
"""Scale benchmark: a large synthetic project through the real processes (Label Studio, the coordinator's web
process, its workers), started by ``stack.services`` on 127.0.0.1 in a throw-away folder.

1. **scale** (``--tasks``, default 100,000, the ``tiny`` preset: the machinery is measured, not the model): LSPET
   pool images hard-linked under ``--tasks`` distinct names inside Label Studio's local-files root, linked with
   ``python -m backend link --images`` (timed), ranked, then ``--rounds`` rounds labelled by the simulated
   annotator (``stack.annotator``, Label Studio's API), closed and re-ranked; then an incremental and a full
   reconcile; Label Studio's prediction count (per version and per task) and database size.
2. **compare** (``--compare-tasks``, default 10,000, the ``cpu`` preset): the same ranking by 1 worker x 1 thread,
   2 workers x 1 thread and 1 worker x 2 threads (``backend worker --threads``; one torch thread per process).
3. **pool** (the full LSPET pool, 8,500 tasks, 1 worker, 2 torch threads, the ``cpu`` preset, a 3-minute training
   budget): round close -> re-ranked queue.

Prints one JSON object (also written to ``--out``) and a table. Peak memory is the kernel's VmHWM of every
process of each service. The full run takes hours on 2 cores:
    .venv/bin/python scripts/bench_scale.py --out docs/results/bench_scale.json
A smoke run (the test's): --quick
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_scale_stack import (  # noqa: E402
    BenchError, PeakMemory, SyntheticTruth, coordinator_predictions, files_mb, instance, label_studio_predictions,
    mirror_lspet, rank_jobs, synthetic_images,
)
from stack.annotator import GroundTruth, SimulatedAnnotator  # noqa: E402
from stack.process import free_port  # noqa: E402
from stack.project import Coordinator, LinkSpec, link, round_ready  # noqa: E402
from stack.config import Secrets, StackConfig  # noqa: E402
from stack.services import running_pid, start_service, stop_service  # noqa: E402
from vl4pose.data import load_samples  # noqa: E402

log = logging.getLogger("bench_scale")
COMPARE = (("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1), ("1 worker x 2 threads", 1, 2))


class Bench:
    """The running system and what was measured so far."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.root = work / "files"  # Label Studio's local-files root
        self.root.mkdir(parents=True, exist_ok=True)
        secrets = Secrets.generate()
        ports = {"labelstudio": free_port(), "ml": free_port(), "coordinator": free_port()}  # no ML backend runs
        settings = {"holdout_fraction": 0.0, "rank_shard_size": args.shard_size, "reconcile_minutes": 59,
                    "job_retry_delay_s": 5, "train_epochs": 1, "train_steps_per_epoch": args.train_steps,
                    "train_batch_size": 8, "train_warmup_steps": 1, "train_val_fraction": 0.25, "log_level": "INFO"}
        self.config = StackConfig(work / "storage", secrets, self.root, ports, settings=settings, torch_threads=1,
                                  worker_threads=1, web_workers=2)
        self.db_url = f"sqlite:///{self.config.storage / 'coordinator.sqlite'}"
        self.memory = PeakMemory()
        self.workers: list = []
        self.coordinator = Coordinator(self.config.url("coordinator"), secrets.api_token)

    def start(self, name: str) -> None:
        self.memory.watch({"labelstudio": "label_studio", "coordinator": "coordinator_web"}[name],
                          start_service(self.config, name, timeout=self.args.start_timeout))

    def start_workers(self, label: str, count: int, threads: int, torch_threads: int, **settings: object) -> None:
        self.stop_workers()
        for k in range(count):
            one = instance(self.config, f"worker-{label}-{k + 1}", worker_threads=threads, torch_threads=torch_threads,
                           settings={**self.config.settings, **settings})
            self.memory.watch(f"worker {label} #{k + 1}", start_service(one, "worker", timeout=self.args.start_timeout))
            self.workers.append((f"worker {label} #{k + 1}", one))

    def stop_workers(self) -> None:
        for role, one in self.workers:
            self.memory.forget(role)
            stop_service(one, "worker")
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        for name, role in (("coordinator", "coordinator_web"), ("labelstudio", "label_studio")):
            if running_pid(self.config, name):
                self.memory.forget(role)
            stop_service(self.config, name)
        self.memory.close()

    def link(self, title: str, options: dict, checkpoint: Path) -> tuple[dict, float]:
        started = time.monotonic()
        linked = link(self.config, LinkSpec(title, options, init_checkpoint=checkpoint), timeout=self.args.timeout)
        return linked, time.monotonic() - started

    def wait_ranked(self, linked: dict, after_round: int | None = None) -> dict:
        """Wait for the initial ranking (``after_round`` None) or for the round after ``after_round`` to be open and
        ranked, with no job left running."""
        if after_round is None:
            done, what = round_ready(linked["initial_version"]), "the initial ranking"
        else:
            def done(report: dict) -> bool:
                current = report["current_round"] or {}
                return (current.get("number", 0) > after_round and current.get("state") == "open"
                        and bool(current.get("model_version")) and report["current_job"] is None)
            what = f"round {after_round} closed, trained and re-ranked"
        return self.coordinator.wait(linked["project_id"], done, what, self.args.timeout)

    def annotator(self, linked: dict, truth: GroundTruth) -> SimulatedAnnotator:
        return SimulatedAnnotator(self.config.url("labelstudio"), self.config.secrets.ls_token, linked["ls_project_id"],
                                  truth)


def checkpoint_for(spec: str, bench: Bench) -> Path:
    if spec != "tiny":
        return Path(spec).resolve()
    out = bench.work / "tiny-starter"
    if not (out / "best" / "config.json").is_file():
        # deferred on purpose: it loads the coordinator's runtime (~1.5 s), needed only while the tiny model is untrained
        from bench_round_measure import tiny_starter  # the same tiny model bench_round.py trains

        return tiny_starter(out)
    return out / "best"


def labelled_rounds(bench: Bench, linked: dict, truth: GroundTruth, rounds: int, budget: int) -> list[dict]:
    """Label ``rounds`` rounds of ``budget`` tasks each; after each, wait for the re-ranking and read its figures."""
    annotator, out = bench.annotator(linked, truth), []
    for number in range(1, rounds + 1):
        started = time.monotonic()
        done = annotator.run(budget)
        if len(done) != budget:
            raise BenchError(f"round {number}: only {len(done)} of {budget} tasks could be labelled")
        annotate_s = time.monotonic() - started
        log.info("round %d labelled (%d tasks, %.1f s); waiting for the re-ranking", number, budget, annotate_s)
        report = bench.wait_ranked(linked, after_round=number)
        closed = next(r for r in report["rounds"] if r["number"] == number)
        timings, metrics = closed.get("timings", {}), closed.get("metrics", {})
        out.append({"number": number, "labelled": len(done), "accepted": sum(d.accepted for d in done),
                    "annotate_s": round(annotate_s, 1), "close_to_ranked_s": closed.get("close_to_ranked_s"),
                    "train_s": timings.get("train_s"), "evaluate_s": timings.get("evaluate_s"),
                    "rank_s": timings.get("rank_s"), "ranked_tasks": metrics.get("ranked_tasks"),
                    "pruned": metrics.get("pruned_predictions"), "trained_version": closed.get("trained_version")})
    return out


def reconcile(bench: Bench, project_id: int, full: bool) -> dict:
    """Queue a reconcile job through the web API and time it until it is done."""
    http, url = bench.coordinator.http, bench.coordinator.url
    started = time.monotonic()
    answer = http.post(f"{url}/api/projects/{project_id}/reconcile", params={"full": "1"} if full else {}, timeout=60)
    if answer.status_code != 202:
        raise BenchError(f"reconcile answered {answer.status_code}: {answer.text[:300]}")
    job_id = answer.json()["job_id"]
    while True:
        job = bench.coordinator.get(f"/api/jobs/{job_id}")
        if job["state"] in ("done", "failed"):
            break
        if time.monotonic() - started > bench.args.timeout:
            raise BenchError(f"reconcile job {job_id} did not finish in {bench.args.timeout:.0f} s")
        time.sleep(0.2)
    if job["state"] != "done":
        raise BenchError(f"reconcile job {job_id} failed: {job['error']}")
    return {"seconds": round(time.monotonic() - started, 2), "job_id": job_id}


def scale_phase(bench: Bench, pool: list) -> dict:
    args, folder = bench.args, bench.root / "synthetic"
    started = time.monotonic()
    how = synthetic_images(pool, folder, args.tasks)
    images_s = time.monotonic() - started
    log.info("scale: %d image names ready (%s, %.1f s); linking", args.tasks, how, images_s)
    bench.start_workers("scale", 1, 2, 1, train_preset="tiny")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    linked, link_s = bench.link(f"scale {args.tasks}", {"images": folder, "round_budget": args.budget},
                                checkpoint_for("tiny", bench))
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    log.info("scale: linked in %.1f s; waiting for the initial ranking", link_s)
    bench.wait_ranked(linked)
    rounds = labelled_rounds(bench, linked, SyntheticTruth(pool, folder), args.rounds, args.budget)
    ranks = rank_jobs(bench.db_url, linked["project_id"])
    for number, row in enumerate(ranks):
        row["expected"] = args.tasks - number * args.budget  # every unlabelled task, each ranking
    result = {
        "tasks": args.tasks, "images": how, "images_s": round(images_s, 1), "link_s": round(link_s, 1),
        "link_tasks_per_s": round(args.tasks / link_s, 1), "project": linked["project_id"],
        "link_command_peak_mb": round(after / 1024, 1) if after > before else None,
        "rankings": ranks, "rounds": rounds,
        "reconcile": {"incremental": reconcile(bench, linked["project_id"], False),
                      "full": reconcile(bench, linked["project_id"], True)},
        "label_studio": label_studio_predictions(bench.config.url("labelstudio"), bench.config.secrets.ls_token,
                                                 linked["ls_project_id"]),
        "coordinator": coordinator_predictions(bench.db_url, linked["project_id"]),
    }
    result["label_studio"]["db_mb"] = files_mb(bench.config.storage / "label-studio", "*.sqlite3*")
    result["coordinator"]["db_mb"] = files_mb(bench.config.storage, "coordinator.sqlite*")
    bench.stop_workers()
    return result


def compare_phase(bench: Bench) -> dict:
    args, configs = bench.args, []
    checkpoint = checkpoint_for(args.compare_checkpoint, bench)
    for name, workers, threads in COMPARE:
        label = f"{workers}x{threads}"
        log.info("compare: %s ranking %d tasks", name, args.compare_tasks)
        bench.start_workers(label, workers, threads, 1)
        options = {"images": bench.root / "synthetic", "limit": args.compare_tasks, "round_budget": args.budget}
        linked, link_s = bench.link(f"compare {label}", options, checkpoint)
        bench.wait_ranked(linked)
        rank = rank_jobs(bench.db_url, linked["project_id"])[0]
        configs.append({"name": name, "workers": workers, "threads": threads, "link_s": round(link_s, 1), **rank})
        bench.stop_workers()
    base = configs[0]["tasks_per_s"]
    for row in configs:
        row["vs_one_worker"] = round(row["tasks_per_s"] / base, 2) if base and row["tasks_per_s"] else None
    return {"tasks": args.compare_tasks, "checkpoint": str(checkpoint), "configs": configs}


def pool_phase(bench: Bench) -> dict:
    args, mirror = bench.args, bench.root / "lspet"
    mirror_lspet(args.data, mirror)
    training = ({"train_time_budget_minutes": args.pool_train_minutes, "train_steps_per_epoch": 0,  # the product's
                 "train_batch_size": 16, "train_warmup_steps": 50, "train_val_fraction": 0.1}  # training defaults
                if args.pool_train_minutes > 0 else {"train_epochs": 1})
    bench.start_workers("pool", 1, 1, 2, **training)
    checkpoint = checkpoint_for(args.pool_checkpoint, bench)
    options = {"dataset": "lspet", "data": mirror, "split": "pool", "limit": args.pool_tasks, "labels": "ignore",
               "holdout_dataset": "lspet", "holdout_data": mirror, "holdout_split": "test",
               "holdout_limit": args.pool_holdout, "round_budget": args.pool_labels}
    log.info("pool: linking %d LSPET pool tasks", args.pool_tasks)
    linked, link_s = bench.link(f"pool {args.pool_tasks}", options, checkpoint)
    bench.wait_ranked(linked)
    truth = GroundTruth.load("lspet", mirror, "pool", bench.root)
    rounds = labelled_rounds(bench, linked, truth, 1, args.pool_labels)
    ranks = rank_jobs(bench.db_url, linked["project_id"])
    bench.stop_workers()
    return {"tasks": args.pool_tasks, "labels": args.pool_labels, "holdout": args.pool_holdout,
            "train_minutes": args.pool_train_minutes or None, "checkpoint": str(checkpoint),
            "link_s": round(link_s, 1), "round": rounds[0], "rankings": ranks,
            "workers": "1 worker x 1 thread, 2 torch threads"}


def run(args: argparse.Namespace, work: Path) -> dict:
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_average": os.getloadavg()},
                    "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    bench = Bench(args, work)
    try:
        started = time.monotonic()
        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: _catch(errors, bench.start, "labelstudio"), daemon=True)
        thread.start()
        pool = load_samples("lspet", args.data, "pool")
        checkpoint_for("tiny", bench)  # trains while Label Studio starts
        thread.join()
        if errors:
            raise errors[0]
        report["label_studio_start_s"] = round(time.monotonic() - started, 1)
        bench.start("coordinator")
        report["scale"] = scale_phase(bench, pool)
        if not args.skip_compare:
            report["compare"] = compare_phase(bench)
        if not args.skip_pool:
            report["pool"] = pool_phase(bench)
    finally:
        bench.stop()
        report["peak_memory"] = bench.memory.report()
    return report


def _catch(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # re-raised by the main thread
        errors.append(exc)


if __name__ == "__main__":
    from bench_scale_cli import main

    raise SystemExit(main(run))
