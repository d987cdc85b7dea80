"""Every sampler goes through the same checks: budget always respected, valid values, no duplicates in flight."""

import numpy as np
import optuna
import pytest

from autopeft.samplers import SAMPLERS, create_sampler
from autopeft.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)


def synthetic_metric(space, params):
    x = space.to_unit(params)
    return float(np.sin(3 * x).sum() / len(x))


@pytest.fixture(scope="module")
def space(tiny_info):
    return SearchSpace.load("default", tiny_info)


def make_study(name, space, limit, seed=0):
    return optuna.create_study(directions=["maximize", "minimize"], sampler=create_sampler(name, space, limit, seed))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_proposals_always_fit_a_tight_budget(name, space):
    limit = 3 * space.minimal_count()
    study = make_study(name, space, limit)
    n = 20 if name == "gp" else 200  # Optuna's GPSampler is slow per proposal
    for _ in range(n):
        trial = study.ask(dict(space.dimensions))
        count = space.count_params(trial.params)
        assert count is not None and count <= limit, (name, trial.params)
        for key, dist in space.dimensions.items():
            assert dist._contains(dist.to_internal_repr(trial.params[key]))
        study.tell(trial, [synthetic_metric(space, trial.params), count / 1000])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_unknown_sampler_name_is_a_clear_error(name, space):
    with pytest.raises(Exception, match="--sampler 'nope' is unknown"):
        create_sampler("nope", space, 10**6)


def test_botorch_gives_parallel_workers_different_configurations(space):
    limit = 10 * space.minimal_count()
    study = make_study("botorch", space, limit)
    for _ in range(10):  # past the quasi-random start
        trial = study.ask(dict(space.dimensions))
        study.tell(trial, [synthetic_metric(space, trial.params), space.count_params(trial.params) / 1000])
    running = [study.ask(dict(space.dimensions)) for _ in range(4)]  # four workers, none finished
    keys = {tuple(t.params.values()) for t in running}
    done = {tuple(t.params.values()) for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert len(keys) == 4 and not keys & done


def test_botorch_learns_from_trials_stopped_early(space):
    limit = 10 * space.minimal_count()
    sampler = create_sampler("botorch", space, limit, 0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for _ in range(8):  # as many as the quasi-random start: all stopped early
        trial = study.ask(dict(space.dimensions))
        trial.set_user_attr("values_at_stop", [synthetic_metric(space, trial.params), 1.0])
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    trial = study.ask(dict(space.dimensions))
    # Had the pruned trials been ignored, this would be the ninth quasi-random point.
    assert trial.params != sampler._sobol(trial.number)
    assert tuple(trial.params.values()) not in {tuple(t.params.values()) for t in study.trials[:-1]}
