"""Reports of a simulation: ``table.md`` (the paper's Table 1 layout), ``curve.png`` and ``failure.md``.

``table.md``: rows = strategies, columns = labelled images per round and the mean over rounds 1..R (per
seed, then over seeds), cells = test PCK@0.2 in percent, mean ± standard deviation over seeds (the best
mean of each column in bold); the same for the validation PCK@0.2 of each round's selected epoch (the
figure to choose settings on); then the mean time spent training and selecting per round.
``curve.png``: test (and validation) PCK@0.2 against labelled images, one line per strategy, shaded ± one
standard deviation. ``failure.md``: failure-detection AUROC of every strategy's
score and the refinement figures on the round-0 model and on each strategy's final model.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def _stats(values: list[float]) -> tuple[float, float, int]:
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return float("nan"), float("nan"), 0
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0, int(finite.size)


def _cell(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    mean, std, n = _stats(values)
    if n == 0:
        return "–"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def summarise(records: list[dict], key: str = "pck@0.2") -> dict[str, dict[int, dict]]:
    """{strategy: {round: {"labelled": mean count, "mean", "std", "n", "values"}}} of one record field."""
    groups: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        groups[record["strategy"]][record["round"]].append(record)
    out: dict[str, dict[int, dict]] = {}
    for strategy, rounds in groups.items():
        out[strategy] = {}
        for round_index, items in sorted(rounds.items()):
            values = [r[key] for r in items]
            mean, std, n = _stats(values)
            out[strategy][round_index] = {"labelled": float(np.mean([r["labelled"] for r in items])),
                                          "mean": mean, "std": std, "n": n, "values": values}
    return out


def _order(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["strategy"] for r in records))


def later_round_means(records: list[dict], strategy: str, key: str = "pck@0.2") -> list[float]:
    """Per seed, the mean of ``key`` over rounds 1..R of one strategy (seeds without a finite value left out)."""
    per_seed: dict[int, list[float]] = defaultdict(list)
    for record in records:
        value = record.get(key)
        if record["strategy"] == strategy and record["round"] >= 1 and value is not None and math.isfinite(value):
            per_seed[record["seed"]].append(value)
    return [float(np.mean(v)) for _, v in sorted(per_seed.items())]


def _pck_section(records: list[dict], key: str, title: str, labels: dict[int, str]) -> list[str]:
    strategies, rounds = _order(records), sorted(labels)
    summary = summarise(records, key)
    later = {s: later_round_means(records, s, key) for s in strategies}
    columns: list[tuple[str, dict[str, list[float]]]] = [
        (labels[r], {s: summary[s][r]["values"] for s in strategies if r in summary[s]}) for r in rounds]
    if max(rounds) >= 1:
        columns.append((f"mean of rounds 1–{max(rounds)}" if max(rounds) > 1 else "mean of round 1", later))
    lines = [title, "", "| strategy | " + " | ".join(name for name, _ in columns) + " |",
             "| --- | " + " | ".join("---:" for _ in columns) + " |"]
    best = []
    for _, column in columns:
        means = [mean for mean, _, n in map(_stats, column.values()) if n]
        best.append(max(means) if means else float("nan"))
    for strategy in strategies:
        cells = []
        for (_, column), top in zip(columns, best):
            values = column.get(strategy)
            mean, _, n = _stats(values) if values is not None else (float("nan"), 0.0, 0)
            text = _cell(values) if values is not None else "–"
            cells.append(f"**{text}**" if n and mean == top and len(strategies) > 1 else text)
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return lines


def format_table(records: list[dict]) -> str:
    """Markdown: test and validation PCK@0.2 (%) per strategy and round (and over rounds 1..R), then seconds."""
    strategies = _order(records)
    rounds = sorted({r["round"] for r in records})
    summary = summarise(records)
    seeds = sorted({r["seed"] for r in records})
    labels = {}
    for round_index in rounds:
        counts = [summary[s][round_index]["labelled"] for s in strategies if round_index in summary[s]]
        labels[round_index] = f"{np.mean(counts):.0f}" if counts else str(round_index)
    head = "| strategy | " + " | ".join(labels[r] for r in rounds) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in rounds) + " |"
    lines = _pck_section(records, "pck@0.2", f"## Test PCK@0.2 (%), mean ± std over {len(seeds)} seed(s) {seeds}",
                         labels)
    lines[1:1] = ["", "Columns: labelled images. Round 0 is one shared model per seed. The mean of rounds 1–R is "
                      "taken per seed, then mean ± std over seeds."]
    if any(r.get("val_pck@0.2") is not None for r in records):
        lines += [""] + _pck_section(records, "val_pck@0.2", "## Validation PCK@0.2 (%) of each round's selected "
                                     "epoch (choose settings on this), mean ± std over seeds", labels)
    lines += ["", "## Seconds per round (mean over seeds): training (optimisation steps) / selection", "", head, rule]
    train, select = summarise(records, "train_seconds"), summarise(records, "select_seconds")
    for strategy in strategies:
        cells = [f"{train[strategy][r]['mean']:.0f} / {select[strategy][r]['mean']:.1f}" if r in train[strategy] else "–"
                 for r in rounds]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curve(records: list[dict], path: Path) -> None:
    """Test PCK@0.2 (%) against labelled images, one line per strategy, shaded ± one standard deviation;
    beside it the validation PCK@0.2 of the selected epochs when the records have it."""
    import matplotlib  # deferred: a slow import that only the curve needs

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    keys = [("pck@0.2", "test")]
    if any(r.get("val_pck@0.2") is not None for r in records):
        keys.append(("val_pck@0.2", "validation"))
    figure, axes = plt.subplots(1, len(keys), figsize=(7 * len(keys), 4.5), dpi=120, squeeze=False)
    for axis, (key, split) in zip(axes[0], keys):
        summary = summarise(records, key)
        for strategy in _order(records):
            rows = [summary[strategy][r] for r in sorted(summary[strategy]) if summary[strategy][r]["n"]]
            if not rows:
                continue
            x = np.array([row["labelled"] for row in rows])
            mean = 100 * np.array([row["mean"] for row in rows])
            std = 100 * np.array([row["std"] for row in rows])
            (line,) = axis.plot(x, mean, marker="o", label=strategy)
            axis.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        axis.set_xlabel("labelled images")
        axis.set_ylabel(f"{split} PCK@0.2 (%)")
        axis.set_title(f"Active learning: {split} PCK@0.2 (mean ± std over seeds)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def format_failure(analysis: dict) -> str:
    """Markdown tables of the per-seed :func:`analyse_model` reports in ``analysis.json``."""
    models = list(dict.fromkeys(m for seed in analysis.values() for m in seed))
    scores = list(dict.fromkeys(s for seed in analysis.values() for m in seed.values() for s in m["failure_auroc"]))
    if not models:
        return "No analysis yet.\n"
    title = {m: "round-0 model" if m == "round0" else f"{m} final" for m in models}
    head = "| score | " + " | ".join(title[m] for m in models) + " |"
    lines = [f"## Failure detection: AUROC of each score for failed test predictions (per-image PCK@0.2 < 0.5), "
             f"mean ± std over {len(analysis)} seed(s)", "",
             "Columns: the model whose predictions are judged. Random scores are all equal (0.5).", "",
             head, "| --- | " + " | ".join("---:" for _ in models) + " |"]
    for score in scores:
        cells = [_cell([seed[m]["failure_auroc"].get(score) for seed in analysis.values() if m in seed], 1.0, 3)
                 for m in models]
        lines.append(f"| {score} | " + " | ".join(cells) + " |")
    lines += ["", "## Refinement on the test split", "",
              "| model | images changed (%) | PCK@0.2 raw on changed | refined on changed | PCK@0.2 raw (all) | refined (all) |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in models:
        reports = [seed[m] for seed in analysis.values() if m in seed]
        ref = [r["refinement"] for r in reports]
        lines.append(f"| {title[m]} | {_cell([r['changed_share'] for r in ref], 100.0, 1)} | "
                     f"{_cell([r['pck_raw_changed'] for r in ref])} | {_cell([r['pck_refined_changed'] for r in ref])} | "
                     f"{_cell([r['pck@0.2'] for r in reports])} | {_cell([r['pck@0.2_refined'] for r in reports])} |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, records: list[dict], analysis: dict) -> None:
    """Write ``table.md``, ``curve.png`` and (when there is an analysis) ``failure.md`` into ``out``."""
    if not records:
        return
    (out / "table.md").write_text(format_table(records))
    plot_curve(records, out / "curve.png")
    if analysis:
        (out / "failure.md").write_text(format_failure(analysis))
