"""What the terminal shows: the time left, the Pareto table."""

from __future__ import annotations

import optuna

from autopeft.display import TrialsEta

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_time_left_counts_the_start_up_estimate_down_until_a_trial_ends():
    eta = TrialsEta()
    eta.start(estimate_seconds=1000.5)
    assert eta.render(None).plain == "0:16:40"


def test_the_pareto_table_of_a_study_selecting_on_neg_loss_shows_the_score_and_the_task_metric():
    from rich.console import Console

    from autopeft import keys
    from autopeft.display import pareto_table
    from autopeft.study import StudySpec, StudyView

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("autopeft.objectives", ["neg_loss", "params"])
    study.set_user_attr(keys.SPEC, StudySpec.from_dict({"task": "rte", "budget": "1%"}).to_dict())
    attrs = {"metric": 0.8123, "trainable_params": 768, "trainable_fraction": 3.4e-5, "config": {}}
    study.add_trial(optuna.trial.create_trial(values=[-0.5721, 3.4e-5], params={}, distributions={}, user_attrs=attrs))
    study.set_user_attr(f"{keys.CONFIRM_PREFIX}0", [{"seed": 1, "values": [-0.5821, 3.4e-5], "metric": 0.8323}])
    console = Console(width=200, record=True)
    console.print(pareto_table(StudyView(study), "Pareto"))
    text = console.export_text()
    assert "neg_loss (selection, selects)" in text and "metric (selection)" in text
    assert "-0.5771 (mean, n=2)" in text and "0.8123" in text and "0.8223 (n=2)" in text
