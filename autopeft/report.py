"""The written report of a study: a Pareto plot (PNG), a trials table (CSV) and a short Markdown summary.

The plot shows the task metric against the trainable parameters (% of the backbone, log scale):
every finished trial, the Pareto front, the knee, the retrained means (± std over seeds) where
``retrain`` ran, the baselines trained for the same task, backbone and budget, and the budget
limit. With the sparsity objective the Pareto points are coloured by their measured sparsity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft import keys
from autopeft.methods.build import describe
from autopeft.pareto import mean_metric
from autopeft.study import SPLIT_LABELS, StudyView, trial_record

PLOT_FILE = "pareto.png"
TABLE_FILE = "trials.csv"
SUMMARY_FILE = "summary.md"


@dataclass
class StudyReport:
    """What a report is drawn from.

    Attributes:
        view: the study.
        trials: one row per trial (see :func:`trials_frame`).
        baselines: one row per baseline (mean metric over seeds), possibly empty.
        knee: the knee's trial number (``None`` without a Pareto set).
        limit_fraction: the budget's limit as a fraction of the backbone.
        status_quo: the status quo's record (:func:`autopeft.study.status_quo_record`), ``None`` when it has none.
        verdict: why ``best`` is the status quo (``None``: a trial beat it).
    """

    view: StudyView
    trials: pd.DataFrame
    baselines: pd.DataFrame
    knee: int | None
    limit_fraction: float | None
    status_quo: dict | None = None
    verdict: str | None = None

    @property
    def metric_name(self) -> str:
        """The task's main metric."""
        from autopeft.tasks import get_task

        return get_task(self.view.spec.what.task).metric


def trials_frame(view: StudyView) -> pd.DataFrame:
    """Every trial as a row: state, metric, trainable parameters, sparsity, Pareto/knee flags, retrain.

    Args:
        view: the study.
    """
    pareto = {t.number for t in view.pareto_trials}
    knee = view.pick_trial("knee").number if pareto else None
    rows = []
    for trial in view.trials:
        record = trial_record(trial)
        summary, settings = view.retrain_summary(trial.number) or (None, None)
        fraction = record["trainable_fraction"]
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name,
                "metric": record["metric"],
                "score": record["score"],  # the first objective: what the search selected on
                **_confirmed_columns(trial, view.confirmations.get(trial.number)),
                **{f"metric_{k}": v for k, v in (record.get("metrics") or {}).items()},
                "trainable_params": record["trainable_params"],
                "trainable_percent": None if fraction is None else 100 * fraction,
                "sparsity": record.get("sparsity"),
                "predicted_memory_gib": record.get(keys.PREDICTED_MEMORY),
                "measured_memory_gib": record.get("measured_memory_gib"),
                "pareto": trial.number in pareto,
                "knee": trial.number == knee,
                "retrain_mean": summary.mean if summary else None,
                "retrain_std": summary.std if summary else None,
                "retrain_seeds": summary.seeds if summary else None,
                "retrain_settings": settings,
                "seconds": record.get("seconds"),
                "configuration": record.get("fail_reason") or describe(record["params"]),
            }
        )
    return pd.DataFrame(rows)


def _confirmed_columns(trial: optuna.trial.FrozenTrial, confirmations: list[dict] | None) -> dict[str, Any]:
    """The selection metric's mean over the trial's seeds when it was confirmed (else empty cells)."""
    if not confirmations or not trial.values:
        return {"metric_mean": None, "metric_seeds": None}
    metric, seeds = mean_metric(trial, confirmations)
    return {"metric_mean": metric, "metric_seeds": seeds}


def collect(view: StudyView, storage: str) -> StudyReport:
    """Gather a study's trials, its retrain results, its status quo and its baselines (same task, backbone, budget).

    Args:
        view: the study.
        storage: the Optuna storage URL holding it (and the baselines study, if any).
    """
    from autopeft.baselines import baseline_points, baselines_study_name
    from autopeft.study import connect_storage
    from autopeft.tasks import get_task

    what = view.spec.what
    name = baselines_study_name(get_task(what.task).name, what.model, what.budget)
    names = {s.study_name for s in optuna.get_all_study_summaries(connect_storage(storage))}
    points = baseline_points(optuna.load_study(study_name=name, storage=storage)) if name in names else []
    limit, backbone = view.attrs.get(keys.LIMIT), view.attrs.get(keys.BACKBONE_PARAMS)
    frame = trials_frame(view)
    knee = frame.loc[frame["knee"], "trial"] if len(frame) else []
    best = view.pick("best") if view.pareto or view.status_quo is not None else None
    return StudyReport(
        view=view,
        trials=frame,
        baselines=pd.DataFrame(points),
        knee=int(knee.iloc[0]) if len(knee) else None,
        limit_fraction=limit / backbone if limit and backbone else None,
        status_quo=view.status_quo_record(),
        verdict=best.verdict if best is not None else None,
    )


def plot_pareto(report: StudyReport, path: str | Path) -> Path:
    """Draw the Pareto plot as a PNG.

    Args:
        report: what to draw.
        path: the PNG file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    frame = report.trials
    done = frame[frame["state"].isin(["COMPLETE", "PRUNED"]) & frame["trainable_percent"].notna()]
    front = done[done["pareto"]].sort_values("trainable_percent")
    sparse = "sparsity" in report.view.attrs.get(keys.OBJECTIVES, [])
    memory = "memory" in report.view.attrs.get(keys.OBJECTIVES, [])
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    finished = done[done["state"] == "COMPLETE"]
    ax.scatter(finished["trainable_percent"], finished["metric"], s=18, c="0.7", label="trials", zorder=2)
    pruned = done[done["state"] == "PRUNED"]
    if len(pruned):
        ax.scatter(
            pruned["trainable_percent"], pruned["metric"], s=18, facecolors="none", edgecolors="0.6",
            label="trials stopped early (metric at the stop)", zorder=2,
        )  # fmt: skip
    if len(front):
        ax.step(front["trainable_percent"], front["metric"], where="post", c="tab:blue", lw=1.2, zorder=3)
        colour = front["sparsity"].fillna(0) if sparse else "tab:blue"
        scale = {"vmin": 0, "vmax": 1}
        if memory:  # the third objective: memory is the colour (a point may lie on the front for its memory alone)
            colour, scale = front["predicted_memory_gib"], {}
        points = ax.scatter(
            front["trainable_percent"], front["metric"], s=46, c=colour, cmap="viridis", **scale,
            edgecolors="black", linewidths=0.5, label="Pareto set (search)", zorder=4,
        )  # fmt: skip
        if sparse or memory:
            label = "predicted peak training memory (GiB)" if memory else "measured sparsity of the encoder weights"
            fig.colorbar(points, ax=ax, label=label)
    retrained = done[done["retrain_mean"].notna()]
    if len(retrained):
        ax.errorbar(
            retrained["trainable_percent"], retrained["retrain_mean"], yerr=retrained["retrain_std"], fmt="D",
            ms=6, c="black", capsize=3, label=f"retrained (mean ± std, {int(retrained['retrain_seeds'].max())} seeds)",
            zorder=5,
        )  # fmt: skip
    if report.status_quo is not None:
        quo = report.status_quo
        ax.scatter(
            [100 * quo["trainable_fraction"]], [quo["metric"]], s=120, marker="X", c="tab:orange", edgecolors="black",
            label=f"status quo: {quo['label']} (search)", zorder=6,
        )  # fmt: skip
    if report.knee is not None:
        knee = done[done["trial"] == report.knee].iloc[0]
        ax.scatter(
            [knee["trainable_percent"]], [knee["metric"]], s=260, marker="*", c="tab:red", edgecolors="black",
            label=f"knee (trial {report.knee})", zorder=6,
        )  # fmt: skip
    markers = iter(["s", "^", "v", "P", "X", "h", "<", ">"])
    for row in report.baselines.itertuples():
        ax.errorbar(
            [100 * row.trainable_fraction], [row.metric_mean], yerr=[row.metric_std], fmt=next(markers, "o"), ms=8,
            capsize=3, label=f"{row.label} ({row.seeds} seeds)", zorder=5,
        )  # fmt: skip
    if report.limit_fraction:
        ax.axvline(100 * report.limit_fraction, ls="--", c="tab:red", lw=1, label="budget limit")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    ax.set_xlabel("trainable parameters (% of the backbone, log scale)")
    split = report.view.scored_on
    ax.set_ylabel(f"{report.metric_name}: trials on the {split} split, retrained and baselines on validation")
    ax.set_title(f"{report.view.name}: {report.metric_name} vs trainable parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _markdown_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def summary_markdown(report: StudyReport) -> str:
    """A short Markdown summary: the study, the Pareto set (with retrained means), the baselines, the plot.

    Args:
        report: what to summarise.
    """
    what = report.view.spec.what
    frame = report.trials
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    columns = ["trial", "metric", "retrain_mean", "retrain_std", "trainable_params", "trainable_percent", "knee"]
    columns += ["sparsity"] if frame["sparsity"].notna().any() else []
    columns += ["predicted_memory_gib", "measured_memory_gib"] if frame["predicted_memory_gib"].notna().any() else []
    front = frame[frame["pareto"]][[*columns, "configuration"]] if len(frame) else frame
    split = report.view.scored_on
    front = front.rename(
        columns={"metric": f"metric ({split})", "retrain_mean": "validation mean", "retrain_std": "validation std"}
    )
    warning = []
    if split == "validation":
        warning = [
            "",
            "**These figures are optimistic**: the search selected its trials on the validation split, the "
            "split they are reported on (`--select-on validation`); the best of many noisy trials, scored on "
            "the data that picked it, is overstated.",
        ]
    unlearnt = report.view.not_learnt_warning()
    if unlearnt:
        warning += ["", f"**Warning**: {unlearnt}."]
    lines = [
        f"# Study {report.view.name}",
        "",
        f"- task: {what.task} (metric: {report.metric_name}; the search scored its trials on the "
        f"{SPLIT_LABELS[split]}; retrained runs and baselines are scored on the validation split)",
        f"- model: {what.model}",
        f"- budget: {what.budget}; space: {what.space}; sampler: {report.view.spec.how.sampler}",
        f"- trials: {', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items())) or 'none'}",
        *warning,
        "",
        f"![Pareto plot]({PLOT_FILE})",
        "",
        "## Pareto set",
        "",
        _markdown_table(front) if len(front) else "No finished trial yet.",
        "",
    ]
    if report.status_quo is not None:
        quo = report.status_quo
        lines += [
            f"Status quo (trained beside the search, to the end): {quo['label']}, {report.metric_name} "
            f"{quo['metric']:.4f} on the {split} split, {quo['trainable_params']:,} trainable parameters"
            + (f" ({quo['note']})" if quo.get("note") else "")
            + ".",
            "",
        ]
    if report.verdict:
        lines += [
            f"**{report.verdict[0].upper() + report.verdict[1:]}**: `export --pick best` exports the status quo.",
            "",
        ]
    if report.knee is not None:
        lines += [f"Knee: trial {report.knee} (`autopeft export --pick knee`).", ""]
    if len(report.baselines):
        shown = report.baselines[["label", "metric_mean", "metric_std", "seeds", "trainable_params", "settings"]]
        lines += ["## Baselines", "", _markdown_table(shown), ""]
    lines += [f"All trials: [{TABLE_FILE}]({TABLE_FILE}).", ""]
    return "\n".join(lines)


def write_report(view: StudyView, storage: str, out: str | Path, tracker=None) -> dict[str, Path]:
    """Write ``pareto.png``, ``trials.csv`` and ``summary.md`` to ``out``; log them to MLflow when a tracker is given.

    Args:
        view: the study.
        storage: its Optuna storage URL.
        out: the output folder (created).
        tracker: the study's :class:`autopeft.tracking.Tracker` (the files go to its parent run).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = collect(view, storage)
    paths = {
        "plot": plot_pareto(report, out / PLOT_FILE),
        "table": out / TABLE_FILE,
        "summary": out / SUMMARY_FILE,
    }
    report.trials.to_csv(paths["table"], index=False)
    paths["summary"].write_text(summary_markdown(report))
    if tracker is not None:
        for path in paths.values():
            tracker.log_artifact(path)
    return paths


def finished_count(view: StudyView) -> int:
    """Trials trained to the end or stopped at a rung (those the plot shows)."""
    return len(view.states(TrialState.COMPLETE, TrialState.PRUNED))
