"""The active-learning simulation: a smoke run through the CLI, resuming after an interruption, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vl4pose.cli import main
from vl4pose.data import load_samples
from vl4pose.errors import ConfigError
from vl4pose.simulate.config import SimulationConfig, SimulationData, json_safe
from vl4pose.simulate.protocol import Simulation
from vl4pose.simulate.report import format_table, summarise
from vl4pose.skeletons import LSP14

SMOKE = ["--initial", "8", "--budget", "4", "--rounds", "2", "--preset", "tiny", "--epochs", "1", "--initial-epochs", "1",
         "--steps-per-epoch", "2", "--batch-size", "4", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def split_file(tmp_path_factory, lspet_dir):
    split = json.loads((lspet_dir / "split.json").read_text())
    path = tmp_path_factory.mktemp("split") / "split.json"
    path.write_text(json.dumps({"pool": split["pool"][:24], "val": split["val"][:6], "test": split["test"][:10]}))
    return path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, lspet_dir, split_file):
    out = tmp_path_factory.mktemp("simulation")
    code = main(["simulate", "--data", str(lspet_dir), "--split-file", str(split_file), "--strategies", "random",
                 "vl4pose", "--seeds", "0", *SMOKE, "--out", str(out)])
    assert code == 0
    return out


def test_smoke_run_writes_sensible_results(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert results["config"]["strategies"] == ["random", "vl4pose"] and results["machine"]["cores"] >= 1
    records = results["records"]
    assert sorted((r["strategy"], r["round"]) for r in records) == [
        (s, r) for s in ("random", "vl4pose") for r in (0, 1, 2)]
    for record in records:
        assert record["labelled"] == 8 + 4 * record["round"]
        assert 0.0 <= record["pck@0.2"] <= 1.0 and record["test_images"] > 0
        assert record["train_seconds"] >= 0 and record["select_seconds"] >= 0
        assert 0.0 <= record["val_pck@0.2"] <= 1.0 and record["epochs_run"] >= 1 and record["best_epoch"] >= 1
        assert (smoke / record["checkpoint"] / "weights.pt").is_file()
    round0 = [r for r in records if r["round"] == 0]
    assert round0[0]["pck@0.2"] == round0[1]["pck@0.2"] and all(r["shared"] for r in round0)
    for strategy in ("random", "vl4pose"):
        sets = [json.loads((smoke / "seed0" / ("round0" if r == 0 else f"{strategy}/round{r}") / "labelled.json")
                           .read_text())["ids"] for r in range(3)]
        assert all(set(a) < set(b) for a, b in zip(sets, sets[1:])) and len(set(sets[-1])) == 16


def test_smoke_run_writes_the_table_curve_and_failure_tables(smoke):
    table = (smoke / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| strategy"))
    assert header.split("|")[2:5] == [" 8 ", " 12 ", " 16 "]
    rows = [line for line in table.splitlines() if line.startswith("| random") or line.startswith("| vl4pose")]
    assert len(rows) == 6 and all("±" in row for row in rows[:4])  # test, validation, then seconds
    assert "## Validation PCK@0.2" in table and header.split("|")[5] == " mean of rounds 1–2 "
    png = (smoke / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    analysis = json.loads((smoke / "analysis.json").read_text())
    assert set(analysis["seed0"]) == {"round0", "random", "vl4pose"}
    report = analysis["seed0"]["vl4pose"]
    assert set(report["failure_auroc"]) == {"random", "vl4pose"} and report["labelled"] == 16
    assert 0.0 <= report["refinement"]["changed_share"] <= 1.0
    assert "Failure detection" in (smoke / "failure.md").read_text()


class Interrupt(Exception):
    pass


def test_an_interrupted_simulation_resumes_without_redoing_finished_rounds(tmp_path, lspet_dir, split_file):
    data = SimulationData(LSP14, *(load_samples("lspet", lspet_dir, s, split_file) for s in ("pool", "val", "test")),
                          {"test": "resume"})
    config = SimulationConfig(strategies=("random", "coreset"), initial=8, budget=4, rounds=2, seeds=(0,),
                              preset="tiny", epochs=2, initial_epochs=1, steps_per_epoch=2, batch_size=4, warmup_steps=1)
    holder: dict = {}

    def stop(progress):
        if holder["sim"].current == ("coreset", 0, 2) and progress.epoch == 1:
            raise Interrupt

    holder["sim"] = Simulation(config, data, tmp_path, callbacks=[stop])
    with pytest.raises(Interrupt):
        holder["sim"].run()
    before = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(before) == 5  # round 0 for both, random 1-2, coreset 1
    assert (tmp_path / "seed0/coreset/round2/state.pt").is_file()  # the Trainer's own resume point
    selection = (tmp_path / "seed0/coreset/round2/labelled.json")
    selected = selection.read_text()

    seen = []
    resumed = Simulation(config, data, tmp_path, callbacks=[lambda p: seen.append((resumed.current, p.epoch))])
    records = resumed.run()
    assert {unit for unit, _ in seen} == {("coreset", 0, 2)}  # only the interrupted round trained again
    assert {epoch for _, epoch in seen} == {1}  # ... from its second epoch
    assert selection.read_text() == selected
    assert len(records) == 6 and records[:5] == before
    assert not (tmp_path / "seed0/coreset/round2/state.pt").exists()

    with pytest.raises(ConfigError, match="budget"):
        Simulation(SimulationConfig(**{**config.__dict__, "budget": 5}), data, tmp_path).run()


def test_time_budgets_reach_every_training_run():
    config = SimulationConfig(time_budget_min=2.0, initial_time_budget_min=5.0, epochs=7, initial_epochs=50)
    assert config.train_config(0, 0, ()).time_budget_s == 300.0 and config.train_config(0, 0, ()).epochs == 50
    assert config.train_config(1, 2, ()).time_budget_s == 120.0 and config.train_config(1, 2, ()).epochs == 7
    fixed = SimulationConfig(time_budget_min=None, initial_time_budget_min=None)
    assert fixed.train_config(0, 0, ()).time_budget_s is None and fixed.train_config(0, 1, ()).time_budget_s is None
    with pytest.raises(ConfigError, match="no-time-budget"):
        SimulationConfig(time_budget_min=0.0).validate()
    defaults = SimulationConfig()
    assert (defaults.initial, defaults.budget, defaults.rounds, defaults.seeds) == (1000, 500, 3, (0, 1, 2))
    assert defaults.strategies == ("random", "multipeak_entropy", "vl4pose")


def test_an_ablation_reuses_round0_and_the_baseline_arms_and_trains_only_its_own(tmp_path, lspet_dir, split_file):
    """2 seeds, 1 round: the protocol's shape in miniature; then a VL4Pose variant added to the same folder."""
    data = SimulationData(LSP14, *(load_samples("lspet", lspet_dir, s, split_file) for s in ("pool", "val", "test")),
                          {"test": "ablation"})
    config = SimulationConfig(strategies=("random", "vl4pose"), initial=8, budget=4, rounds=1, seeds=(0, 1),
                              preset="tiny", epochs=1, initial_epochs=1, steps_per_epoch=2, batch_size=4,
                              warmup_steps=1, time_budget_min=0.5, initial_time_budget_min=0.5, analysis=False)
    Simulation(config, data, tmp_path).run()
    before = json.loads((tmp_path / "results.json").read_text())["records"]
    assert len(before) == 8 and all(r["val_pck@0.2"] is not None for r in before)
    weights = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("weights.pt")}

    seen: set = set()
    ablation = SimulationConfig(**{**config.__dict__, "strategies": ("vl4pose_kcentre",)})
    holder: dict = {}
    holder["sim"] = Simulation(ablation, data, tmp_path, callbacks=[lambda p: seen.add(holder["sim"].current)])
    records = holder["sim"].run()
    assert seen == {("vl4pose_kcentre", 0, 1), ("vl4pose_kcentre", 1, 1)}  # no round 0, no baseline retrained
    assert records[:8] == before and {p: p.stat().st_mtime_ns for p in weights} == weights
    mine = {(r["seed"], r["round"]): r for r in records if r["strategy"] == "vl4pose_kcentre"}
    shared = {(r["seed"], r["round"]): r for r in before if r["strategy"] == "random" and r["round"] == 0}
    assert {k: v["pck@0.2"] for k, v in mine.items() if k[1] == 0} == {k: v["pck@0.2"] for k, v in shared.items()}
    assert json.loads((tmp_path / "config.json").read_text())["simulation"]["strategies"] == [
        "random", "vl4pose", "vl4pose_kcentre"]
    table = (tmp_path / "table.md").read_text()
    assert "2 seed(s) [0, 1]" in table and "| vl4pose_kcentre |" in table
    row = next(line for line in table.splitlines() if line.startswith("| random |"))
    assert row.count("±") == 3  # 8 and 12 labelled, mean of round 1: mean ± std over the two seeds
    assert (tmp_path / "curve.png").read_bytes().startswith(b"\x89PNG")
    added = json.loads((tmp_path / "seed0/vl4pose_kcentre/round1/labelled.json").read_text())["added"]
    assert len(added) == 4


def test_table_reports_mean_and_std_over_seeds():
    records = [{"strategy": s, "seed": seed, "round": r, "labelled": 10 + 5 * r, "pck@0.2": v,
                "train_seconds": 1.0, "select_seconds": 0.5}
               for s, base in (("random", 0.5), ("vl4pose", 0.6)) for seed in (0, 1) for r in (0, 1)
               for v in [base + 0.2 * seed + 0.1 * r]]
    summary = summarise(records)
    assert summary["random"][1]["mean"] == pytest.approx(0.7) and summary["random"][1]["n"] == 2
    table = format_table(records)
    assert "| 10 | 15 |" in table
    assert "| random | 60.00 ± 14.14 | 70.00 ± 14.14 |" in table
    assert "| vl4pose | **70.00 ± 14.14** | **80.00 ± 14.14** |" in table


def test_results_are_strict_json():
    assert json_safe({"a": [float("nan"), np.float32(1.5), np.int64(2)], "b": float("inf")}) == {"a": [None, 1.5, 2], "b": None}
