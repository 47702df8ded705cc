"""The active-learning protocol behind ``vl4pose simulate``, with ground truth as the annotator.

Per seed: draw a random initial labelled set from the pool (the same for every strategy), train the
round-0 model once with every auxiliary head any strategy needs (heads train on detached features, so
they do not change the pose model) and share it. Then, per strategy and round: score the unlabelled pool
with the previous round's model, add the ``budget`` best images, fine-tune from the previous round,
and evaluate PCK@0.2 on the test split. Everything lands in the output folder (see docs/SIMULATION.md)::

    OUT/config.json             the protocol (a rerun must match it)
    OUT/results.json            one record per strategy, seed and round
    OUT/table.md, OUT/curve.png PCK@0.2 mean ± std per labelled count
    OUT/analysis.json, OUT/failure.md   failure-detection and refinement tables (final rounds)
    OUT/seed<S>/round0/         the shared round-0 training run (checkpoint in best/)
    OUT/seed<S>/<strategy>/round<R>/    later runs; labelled.json = the labelled set of that round

Interrupted runs resume: finished rounds are read back from ``results.json``, a selection already made
from ``labelled.json``, and the round in training from the Trainer's own ``state.pt``. A rerun with more
``strategies`` (an ablation) reuses the cached round-0 models and the other arms' rounds and trains only
the new arm; the heads trained stay those of the folder's first run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vl4pose.calibrate import score_pass, validation_pass
from vl4pose.checkpoint import Checkpoint, load_checkpoint
from vl4pose.data.crops import CropCache
from vl4pose.device import machine_info, prepare_module, resolve_device
from vl4pose.errors import ConfigError, DataError
from vl4pose.models import preset
from vl4pose.simulate.analysis import analyse_model
from vl4pose.simulate.config import (SimulationConfig, SimulationData, check_protocol, decode_workers, rng_stream,
                                     validation_metrics, write_json)
from vl4pose.simulate.report import write_reports
from vl4pose.strategies import Strategy, get_strategies, pool_values, required_heads
from vl4pose.train import Progress, Trainer

log = logging.getLogger(__name__)


class Simulation:
    """Runs (or resumes) a protocol into ``out``. ``callbacks`` reach every Trainer (see ``current``)."""

    def __init__(self, config: SimulationConfig, data: SimulationData, out: str | Path,
                 callbacks: list[Callable[[Progress], None]] | None = None) -> None:
        self.config = config.validate()
        self.data = data
        self.out = Path(out)
        self.callbacks = callbacks or []
        self.strategies = get_strategies(config.strategies)
        self.heads = required_heads(self.strategies)
        self.model_config = preset(config.preset)
        self.device = resolve_device(None)  # VL4POSE_DEVICE (simulate --device); caches live where the model runs
        self.current: tuple[str, int, int] | None = None
        self._pool_cache: CropCache | None = None
        self._test_cache: CropCache | None = None
        self._bar: tqdm | None = None
        ids = [s.sample_id for s in data.pool]
        if len(set(ids)) != len(ids):
            raise DataError("pool sample ids are not unique; the simulation identifies images by id")
        self.pool_by_id = {s.sample_id: s for s in data.pool}
        if config.initial > len(data.pool):
            raise ConfigError(f"--initial {config.initial} is larger than the pool ({len(data.pool)} images)")
        if not data.val or not data.test:
            raise DataError("the validation and test splits must not be empty")

    # -- bookkeeping --------------------------------------------------------------------------------
    def _load_results(self) -> list[dict]:
        path = self.out / "results.json"
        return json.loads(path.read_text()).get("records", []) if path.is_file() else []

    def _save_results(self) -> None:
        write_json(self.out / "results.json", {"config": self.config.to_dict(), "data": self.data.source,
                                                 "machine": machine_info(), "records": self.records})

    def _done(self, strategy: str, seed: int, round_index: int) -> dict | None:
        return self.done.get((strategy, seed, round_index))

    def _add(self, records: list[dict]) -> None:
        """Store finished rounds (all at once), then drop their spent resume state."""
        for record in records:
            self.records.append(record)
            self.done[(record["strategy"], record["seed"], record["round"])] = record
        self._save_results()
        for record in records:
            (self.out / record["checkpoint"]).parent.joinpath("state.pt").unlink(missing_ok=True)

    @property
    def pool_cache(self) -> CropCache:
        if self._pool_cache is None:
            log.info("caching %d pool crops", len(self.data.pool))
            self._pool_cache = CropCache(self.data.pool, self.model_config.input_size, margin=1.0, device=self.device,
                                         workers=decode_workers())
            self.pool_index = {s.sample_id: i for i, s in enumerate(self._pool_cache.samples)}
        return self._pool_cache

    @property
    def test_cache(self) -> CropCache:
        if self._test_cache is None:
            self._test_cache = CropCache(self.data.test, self.model_config.input_size, margin=1.0, device=self.device,
                                         workers=decode_workers())
        return self._test_cache

    # -- the protocol -------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Run every missing round, then the analysis and the reports; returns the records."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.heads = check_protocol(self.out, self.config, self.data.source, self.heads)
        self.records = self._load_results()
        self.done = {(r["strategy"], r["seed"], r["round"]): r for r in self.records}
        cfg = self.config
        units = len(cfg.seeds) * (1 + len(self.strategies) * cfg.rounds)
        finished = sum(1 for seed in cfg.seeds for r in range(cfg.rounds + 1) for x in self.strategies[: None if r else 1]
                       if self._done(x.name, seed, r))
        with tqdm(total=units, initial=finished, desc="simulate", unit="round", disable=None) as self._bar:
            for seed in cfg.seeds:
                self._seed(seed)
        self._bar = None
        write_reports(self.out, self.records, self._load_analysis())
        return self.records

    def _seed(self, seed: int) -> None:
        round0 = self._round0(seed)
        finals: dict[str, tuple[Checkpoint | None, list[str]]] = {}
        for strategy in self.strategies:
            ckpt, ids = round0
            for round_index in range(1, self.config.rounds + 1):
                ckpt, ids = self._round(strategy, seed, round_index, ckpt, ids)
            finals[strategy.name] = (ckpt, ids)
        if self.config.analysis:
            self._analyse(seed, round0, finals)

    def _folder(self, strategy: str | None, seed: int, round_index: int) -> Path:
        if round_index == 0:
            return self.out / f"seed{seed}" / "round0"
        return self.out / f"seed{seed}" / strategy / f"round{round_index}"

    def _round0(self, seed: int) -> tuple[Checkpoint | None, list[str]]:
        folder = self._folder(None, seed, 0)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = np.random.default_rng(seed).choice(len(self.data.pool), self.config.initial, replace=False)
        ids = [self.data.pool[i].sample_id for i in np.sort(chosen)]
        if not (folder / "labelled.json").is_file():
            write_json(folder / "labelled.json", {"ids": ids, "added": ids, "select_seconds": 0.0})
        if all(self._done(s.name, seed, 0) for s in self.strategies):
            return None, ids  # loaded lazily by the next round that needs it
        shared = next((r for r in self.records if r["seed"] == seed and r["round"] == 0), None)
        if shared is not None:  # an ablation: the cached round-0 model and its figures serve the new arms too
            self._add([{**shared, "strategy": s.name} for s in self.strategies if not self._done(s.name, seed, 0)])
            return None, ids
        self._start("round0 (shared)", seed, 0)
        torch.manual_seed(seed)
        ckpt, seconds, wall = self._train(folder, ids, seed, 0, None)
        metrics = self._evaluate(ckpt) | validation_metrics(ckpt)
        self._add([self._record(s.name, seed, 0, ids, folder, metrics, seconds, wall, 0.0, shared=True)
                   for s in self.strategies])
        self._finish_unit()
        return ckpt, ids

    def _round(self, strategy: Strategy, seed: int, round_index: int, previous: Checkpoint | None,
               ids: list[str]) -> tuple[Checkpoint | None, list[str]]:
        folder = self._folder(strategy.name, seed, round_index)
        done = self._done(strategy.name, seed, round_index)
        if done:
            return None, json.loads((folder / "labelled.json").read_text())["ids"]
        self._start(strategy.name, seed, round_index)
        if previous is None:
            previous = self._load(self._folder(strategy.name, seed, round_index - 1) / "best")
        ids, select_seconds = self._select(strategy, seed, round_index, previous, ids, folder)
        ckpt, seconds, wall = self._train(folder, ids, seed, round_index, previous)
        metrics = self._evaluate(ckpt) | validation_metrics(ckpt)
        self._add([self._record(strategy.name, seed, round_index, ids, folder, metrics, seconds, wall, select_seconds)])
        self._finish_unit()
        return ckpt, ids

    def _select(self, strategy: Strategy, seed: int, round_index: int, model: Checkpoint, ids: list[str],
                folder: Path) -> tuple[list[str], float]:
        path = folder / "labelled.json"
        if path.is_file():
            stored = json.loads(path.read_text())
            return stored["ids"], stored["select_seconds"]
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        rng = rng_stream(seed, round_index, strategy.name)
        labelled = set(ids)
        if strategy.uses_network:
            cache = self.pool_cache
            unlabelled = np.array([i for i, s in enumerate(cache.samples) if s.sample_id not in labelled], dtype=np.int64)
            if self.config.pool_subset and len(unlabelled) > self.config.pool_subset:
                unlabelled = np.sort(rng.choice(unlabelled, self.config.pool_subset, replace=False))
            log.info("%s seed %d round %d: scoring %d pool images", strategy.name, seed, round_index, len(unlabelled))
            values = pool_values(model, cache, unlabelled, [strategy], self.config.inference_batch)[strategy.name]
            known = None
            if strategy.uses_labelled:
                rows = np.array([self.pool_index[i] for i in ids if i in self.pool_index], dtype=np.int64)
                known = pool_values(model, cache, rows, [strategy], self.config.inference_batch)[strategy.name]
            picked = strategy.order(values, self.config.budget, rng, known)[: self.config.budget]
            added = [cache.samples[unlabelled[p]].sample_id for p in picked]
        else:
            unlabelled_ids = [s.sample_id for s in self.data.pool if s.sample_id not in labelled]
            picked = strategy.order(np.zeros(len(unlabelled_ids)), self.config.budget, rng)[: self.config.budget]
            added = [unlabelled_ids[p] for p in picked]
        seconds = time.perf_counter() - started
        new_ids = list(ids) + added
        write_json(path, {"ids": new_ids, "added": added, "select_seconds": seconds})
        return new_ids, seconds

    def _train(self, folder: Path, ids: list[str], seed: int, round_index: int,
               init: Checkpoint | None) -> tuple[Checkpoint, float, float]:
        config = self.config.train_config(seed, round_index, self.heads)
        trainer = Trainer(self.model_config, self.data.skeleton, config, folder, init_from=init,
                          callbacks=[self._progress, *self.callbacks])
        started = time.perf_counter()
        ckpt = trainer.fit([self.pool_by_id[i] for i in ids], self.data.val)
        return self._on_device(ckpt), round(trainer.seconds, 2), round(time.perf_counter() - started, 2)

    def _on_device(self, ckpt: Checkpoint) -> Checkpoint:
        """Move a checkpoint's networks to the run's device (checkpoints load on the CPU), so pool scoring,
        test evaluation and analysis run where training did."""
        if self.device.type != "cpu":
            ckpt.pose = prepare_module(ckpt.pose, self.device).eval()
            ckpt.heads = ckpt.heads.to(self.device).eval()
        return ckpt

    def _load(self, path: Path) -> Checkpoint:
        return self._on_device(load_checkpoint(path))

    def _evaluate(self, ckpt: Checkpoint) -> dict:
        started = time.perf_counter()
        passed = validation_pass(ckpt.pose, ckpt.heads["bones"], self.test_cache, self.data.skeleton,
                                 self.model_config.sigma, self.config.inference_batch)
        scores = score_pass(passed, self.data.skeleton, ckpt.calibration)
        return {"pck@0.2": scores["pck@0.2"], "pck@0.2_refined": scores["pck@0.2_refined"],
                "vl4pose_failure_auroc": scores["failure_auroc"], "test_images": scores["images"],
                "test_seconds": round(time.perf_counter() - started, 2)}

    def _record(self, strategy: str, seed: int, round_index: int, ids: list[str], folder: Path, metrics: dict,
                train_seconds: float, wall: float, select_seconds: float, shared: bool = False) -> dict:
        log.info("%s seed %d round %d: %d labelled, test PCK@0.2 %.4f", strategy, seed, round_index, len(ids),
                 metrics["pck@0.2"])
        return {"strategy": strategy, "seed": seed, "round": round_index, "labelled": len(ids), **metrics,
                "train_seconds": train_seconds, "round_wall_seconds": wall,
                "select_seconds": round(select_seconds, 2), "shared": shared,
                "checkpoint": str((folder / "best").relative_to(self.out))}

    # -- analysis -----------------------------------------------------------------------------------
    def _load_analysis(self) -> dict:
        path = self.out / "analysis.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _analyse(self, seed: int, round0: tuple[Checkpoint | None, list[str]],
                 finals: dict[str, tuple[Checkpoint | None, list[str]]]) -> None:
        analysis = self._load_analysis()
        key = f"seed{seed}"
        entry = analysis.setdefault(key, {})
        models = {"round0": (round0, self._folder(None, seed, 0))}
        models |= {name: (final, self._folder(name, seed, self.config.rounds)) for name, final in finals.items()}
        for name, ((ckpt, ids), folder) in models.items():
            round_index = 0 if name == "round0" else self.config.rounds
            if entry.get(name, {}).get("round") == round_index:
                continue  # done (a run with more --rounds analyses the new final models)
            self._start(f"analyse {name}", seed, round_index)
            ckpt = ckpt or self._load(folder / "best")
            labelled = None
            if any(s.uses_labelled for s in self.strategies):
                cache = self.pool_cache
                labelled = (cache, np.array([self.pool_index[i] for i in ids if i in self.pool_index], dtype=np.int64))
            entry[name] = analyse_model(ckpt, self.test_cache, self.strategies, labelled, self.config.inference_batch)
            entry[name] |= {"labelled": len(ids), "round": round_index}
            write_json(self.out / "analysis.json", analysis)

    # -- progress -----------------------------------------------------------------------------------
    def _start(self, what: str, seed: int, round_index: int) -> None:
        self.current = (what, seed, round_index)
        if self._bar is not None:
            self._bar.set_description(f"{what} seed {seed} round {round_index}")
        log.info("%s seed %d round %d: start", what, seed, round_index)

    def _finish_unit(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _progress(self, progress: Progress) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"epoch {progress.epoch + 1}/{progress.epochs} step {progress.step}/{progress.steps}")
        if progress.validation is not None and self.current:
            what, seed, round_index = self.current
            log.info("%s seed %d round %d epoch %d/%d: val PCK@0.2 %.4f", what, seed, round_index,
                     progress.epoch + 1, progress.epochs, progress.validation.get("pck@0.2", float("nan")))
