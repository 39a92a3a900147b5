"""Module fixtures for steering tests: a tiny pipeline and an untrained two-objective reward model on it."""

import pytest

from guidance.reward_model import init_reward_model


def family_and_reward_fixtures(variant: str, name: str):
    """A module's ``name`` fixture (the tiny ``variant`` pipeline) and ``reward`` fixture (an untrained reward
    model with objectives "a" and "b" on it): assign both, ``wan, reward = family_and_reward_fixtures(...)``."""

    @pytest.fixture(scope="module", name=name)
    def family(tiny_family):
        return tiny_family(variant)

    @pytest.fixture(scope="module")
    def reward(request):
        return init_reward_model(request.getfixturevalue(name), ["a", "b"], num_blocks=1, seed=0)

    return family, reward
