"""Every sampler through the path a search runs: a real study from a spec, its sampler as a search builds it,
trials asked, started and finished by the searcher's own functions; only the training is synthetic."""

import json

import numpy as np
import optuna
import pytest
import torch

from autopeft.execution import trials as study_trials
from autopeft.samplers import SAMPLERS, KnownObjective, Observation, create_sampler
from autopeft.space import SearchSpace
from autopeft.study import StudySpec, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def synthetic_result(space, params):
    x = space.to_unit(space.canonical(params))  # what trains: dimensions without effect have none here either
    metric = float(np.sin(3 * x).sum() / len(x))
    return {"metric": metric, "metrics": {"accuracy": metric, "neg_loss": metric - 1}}


@pytest.fixture(scope="module")
def space(tiny_info):
    return SearchSpace.load("default", tiny_info)


@pytest.fixture()
def open_bound(tiny_model, tmp_path):
    """Open a fresh study of the default space on the tiny model, with its sampler built as a search builds it."""

    def make(sampler="botorch", budget=None, seed=0, name="s", space="default", objectives=None, **how):
        spec = StudySpec.from_dict(
            dict(
                task="rte",
                budget=budget or "2%",
                model=tiny_model,
                space=space,
                sampler=sampler,
                seed=seed,
                data_dir=None,
                runs_dir=str(tmp_path),
                study=name,
                **({"objectives": objectives} if objectives else {}),
                **how,
            )
        )
        bound = open_study(spec)
        bound.study.sampler = bound.create_sampler()
        return bound

    return make


def run_trials(bound, n, result=synthetic_result):
    """Ask, start and finish ``n`` trials with a synthetic training; return the stored trials."""
    stored = []
    for _ in range(n):
        trial = study_trials.ask(bound)
        started = study_trials.start(bound, trial)
        assert started is not None
        stored.append(study_trials.finish(bound, started, result(bound.space, trial.params)))
    return stored


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_proposals_fit_a_tight_budget_and_the_sampler_assumes_what_the_study_stores(name, space, open_bound):
    bound = open_bound(name, budget=str(3 * space.minimal_count()))
    known = bound.known_objectives()
    assert set(known) == {1}
    for trial in run_trials(bound, 12 if name == "gp" else 40):
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs["trainable_params"] <= bound.limit
        for key, dist in bound.space.dimensions.items():
            assert dist._contains(dist.to_internal_repr(trial.params[key]))
        assert known[1].value(trial.params) == trial.values[1] == trial.user_attrs["trainable_fraction"]
        assert trial.values[1] == trial.user_attrs["trainable_params"] / bound.info.backbone_params
        assert trial.user_attrs["proposal"]["kind"] != "fallback", trial.user_attrs["proposal"]


def test_unknown_sampler_name_is_a_clear_error(space):
    with pytest.raises(Exception, match="--sampler 'nope' is unknown"):
        create_sampler("nope", space, 10**6, 0, {})


def test_botorch_proposes_from_its_model_after_the_quasi_random_start(open_bound):
    bound = open_bound()
    kinds = [t.user_attrs["proposal"]["kind"] for t in run_trials(bound, 14)]
    assert kinds == ["sobol"] * 8 + ["bayes"] * 6


def test_the_start_fills_the_load_it_is_asked_for_and_only_the_start_is_held_to_it(space, open_bound):
    def start_loads(**options):
        bound = open_bound(budget=str(50 * space.minimal_count()), **options)
        stored = run_trials(bound, 10)
        assert [t.user_attrs["proposal"]["kind"] for t in stored] == ["sobol"] * 8 + ["bayes"] * 2
        return [bound.space.budget_load(t.params, bound.limit) / bound.limit for t in stored[:8]]

    assert min(start_loads(name="anywhere")) < 0.5  # the plain start has small configurations ...
    assert min(start_loads(name="upper", start_load=0.5)) >= 0.5  # ... this one none


def test_the_reference_point_is_in_the_units_the_study_stores(open_bound):
    bound = open_bound()
    stored = run_trials(bound, 10)
    y = torch.tensor([[t.values[0], -t.values[1]] for t in stored], dtype=torch.double)
    ref = bound.study.sampler.reference_point(y, [1.0, -1.0])
    # the parameter axis is capped at the budget's fraction of the backbone, the unit of the stored values
    assert ref[1].item() == pytest.approx(-bound.info.fraction(bound.limit))
    assert ref[0].item() < y[:, 0].max().item()
    assert all(-t.values[1] > ref[1].item() for t in stored)  # every feasible trial lies inside it


def test_bayesian_proposals_are_not_pinned_to_the_cheapest_configurations(open_bound):
    """With a metric that rewards capacity, the BO phase must not collapse onto the smallest configurations."""

    def rewards_capacity(space, params):
        metric = 0.5 + 0.3 * np.log1p(space.count_params(params) / 100.0) / np.log1p(bound.limit / 100.0)
        return {"metric": float(metric), "metrics": {"neg_loss": float(metric) - 1}}

    bound = open_bound(budget="1%")  # binding: the space's largest configurations do not fit
    stored = run_trials(bound, 20, rewards_capacity)
    counts = [t.user_attrs["trainable_params"] for t in stored[8:]]
    # with the units mixed up, every BO-phase proposal was the smallest configuration
    assert len(set(counts)) >= 4 and np.median(counts) >= 5 * bound.space.minimal_count(), counts


def test_one_seed_repeats_and_two_seeds_differ(open_bound):
    first = [t.params for t in run_trials(open_bound(seed=3, name="a"), 11)]
    again = [t.params for t in run_trials(open_bound(seed=3, name="b"), 11)]
    other = [t.params for t in run_trials(open_bound(seed=4, name="c"), 11)]
    assert first == again
    assert first[:8] != other[:8] and first[8:] != other[8:]


def test_botorch_gives_parallel_workers_different_configurations(open_bound):
    bound = open_bound(budget="10%")
    run_trials(bound, 10)  # past the quasi-random start
    running = [study_trials.ask(bound) for _ in range(4)]  # four workers, none finished
    keys = {bound.space.key(t.params) for t in running}
    done = {bound.space.key(t.params) for t in bound.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(keys) == 4 and not keys & done
    assert all(t.user_attrs["proposal"]["kind"] == "bayes" for t in running)


def test_botorch_never_spends_a_trial_on_a_configuration_it_has_measured(open_bound):
    # the regression: one-change neighbours of the best trial that changed only the rank of a module
    # type that was off trained the same model, and the GP took them for new points (8 of 24 MRPC trials)
    bound = open_bound(budget="10%")
    stored = run_trials(bound, 20)
    trained = [json.dumps(bound.space.decode(t.params).to_dict(), sort_keys=True) for t in stored]
    assert len(set(trained)) == len(trained)
    assert all(bound.space.canonical(t.params) == t.params for t in stored)  # stored as they train
    assert [t.user_attrs["proposal"]["kind"] for t in stored[8:]] == ["bayes"] * 12


def test_a_failed_configuration_is_never_proposed_again(open_bound):
    bound = open_bound()
    run_trials(bound, 8)
    failed = set()
    for _ in range(6):  # every proposal of the model fails (out of memory, say): the argmax must move on
        trial = study_trials.ask(bound)
        key = bound.space.key(trial.params)
        assert key not in failed
        failed.add(key)
        started = study_trials.start(bound, trial)
        study_trials.finish(bound, started, {"failed": True, "fail_reason": "OutOfMemoryError: synthetic"})
        assert trial.user_attrs["proposal"]["kind"] == "bayes"


def test_pruned_trials_are_kept_out_of_the_model_and_never_proposed_again(open_bound):
    bound = open_bound()
    for _ in range(8):  # as many as the quasi-random start: all stopped early
        trial = study_trials.ask(bound)
        started = study_trials.start(bound, trial)
        study_trials.finish(bound, started, {**synthetic_result(bound.space, trial.params), "pruned": True})
    assert len(bound.study.get_trials(states=(optuna.trial.TrialState.PRUNED,))) == 8
    trial = study_trials.ask(bound)  # the model has no full-fidelity observation yet
    assert trial.user_attrs["proposal"]["kind"] == "sobol"
    assert bound.space.key(trial.params) not in {bound.space.key(t.params) for t in bound.study.trials[:-1]}


def test_a_numerical_failure_is_a_recorded_fallback_and_any_other_error_is_raised(open_bound):
    bound = open_bound()
    run_trials(bound, 8)
    exact = bound.known_objectives()[1]

    def singular(params):
        raise torch.linalg.LinAlgError("synthetic: the kernel matrix is singular")

    sampler = create_sampler("botorch", bound.space, bound.limit, 0, {1: KnownObjective(singular, exact.worst)})
    bound.study.sampler = sampler
    trial = study_trials.ask(bound)
    assert trial.user_attrs["proposal"]["kind"] == "fallback"
    assert "LinAlgError" in study_trials.fallback_reason(trial)
    assert bound.space.is_feasible(trial.params, bound.limit)

    def broken(params):
        raise ValueError("a bug, not a numerical problem")

    bound.study.sampler = create_sampler("botorch", bound.space, bound.limit, 0, {1: KnownObjective(broken, 1.0)})
    with pytest.raises(ValueError, match="a bug"):
        study_trials.ask(bound)


def test_a_trial_stores_the_score_it_selects_on_with_the_task_metric_beside_it(open_bound):
    """The default first objective is the task metric (the picks are made at full fidelity); a study may select on
    neg_loss instead, and the trial's record keeps the task metric beside it, as the training reported it."""
    from autopeft.study import trial_record

    assert [o.name for o in open_bound(sampler="random", name="default").objectives] == ["metric", "params"]
    bound = open_bound(sampler="random", objectives="neg_loss,params")
    for trial in run_trials(bound, 3):
        record = trial_record(trial)
        assert trial.values[0] == record["score"] == trial.user_attrs["metrics"]["neg_loss"]
        assert record["metric"] == trial.user_attrs["metrics"]["accuracy"] != record["score"]


def store_partial_failed_trial(bound, written: int):
    """A trial left as a killed search leaves one killed while its values were written (each value is its own
    commit): ``written`` of its values stored, then failed by its stopped heartbeat."""
    trial = bound.study.ask()
    for name, dist in list(bound.space.dimensions.items())[:written]:
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        else:
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    bound.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return trial.number


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("written", [0, 7])
def test_a_failed_trial_with_part_of_its_values_is_skipped_by_every_sampler(name, written, open_bound):
    bound = open_bound(name, name=f"partial-{name}-{written}")
    run_trials(bound, 5)
    number = store_partial_failed_trial(bound, written)
    stored = bound.study.get_trials(deepcopy=False)[number]
    assert len(stored.params) == written and not bound.space.covers(stored.params)
    assert study_trials.incomplete_trials(bound) == [stored]
    bound.study.sampler = bound.create_sampler()  # as the resumed search builds it
    for trial in run_trials(bound, 6 if name == "gp" else 7):  # past the samplers' start-up trials
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert bound.space.covers(trial.params)


def test_the_model_learns_each_trial_at_the_end_of_its_training_not_at_its_first_rung(open_bound):
    """A response whose first rung ranks configurations against their end (as the rungs of MRPC's searches
    did): proposals must follow what the trials scored at the end of training, where they reached it."""
    bound = open_bound(budget="10%")
    stored = []
    for _ in range(16):  # each scored at a first rung as it trains, then trained to the end
        trial = study_trials.ask(bound)
        started = study_trials.start(bound, trial)
        end = synthetic_result(bound.space, trial.params)
        score = -end["metric"] - 1  # neg_loss at the rung: the better it ends, the worse it starts
        first = {"metric": -end["metric"], "metrics": {"neg_loss": score}, "score": score}
        study_trials.record_rungs(trial, [{"rung": 0, "fraction": 1 / 3, "step": 10, "level": 0, **first}])
        running = bound.study.get_trials(deepcopy=False)[trial.number]  # as a trial stopped there is learnt
        assert bound.observed_values(running) == Observation([score], 1 / 3)
        stored.append(study_trials.finish(bound, started, end))
    assert bound.observed_values(stored[0]) == Observation([stored[0].user_attrs["metrics"]["neg_loss"]], 1.0)
    assert [t.user_attrs["proposal"]["kind"] for t in stored[8:]] == ["bayes"] * 8
    ends = [t.user_attrs["metric"] for t in stored]
    # learning the first rung, the model chased its best: the configurations that end worst
    assert np.mean(ends[8:]) > np.mean(ends[:8]) + 0.1, ends
