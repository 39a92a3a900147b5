"""Which judge objective tells whether guidance helped each reward objective (``--objective-map``).

A reward's objectives are named by whoever trained it (``bright``, ``smooth``); a judge's by its author
(``exposure``, ``temporal_flickering``). Tuning raises each reward objective alone and asks the judge about
the objective the user says measures the same thing; a name both share needs no mapping. An objective
with neither is an error, not a silent skip: a strength chosen without it would be chosen blind to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def parse_objective_map(texts: Iterable[str]) -> dict[str, str]:
    """``["bright=exposure,smooth=temporal_flickering", ...]`` (the flag, repeatable) -> {reward: judge}."""
    mapping: dict[str, str] = {}
    for text in texts:
        for item in filter(None, (part.strip() for part in text.split(","))):
            reward_objective, sep, judge_objective = (part.strip() for part in item.partition("="))
            if not sep or not reward_objective or not judge_objective:
                raise ValueError(f"--objective-map expects REWARD_OBJECTIVE=JUDGE_OBJECTIVE, e.g. bright=exposure; "
                                 f"got {item!r}")
            if mapping.get(reward_objective, judge_objective) != judge_objective:
                raise ValueError(f"--objective-map maps {reward_objective} twice: to {mapping[reward_objective]} "
                                 f"and to {judge_objective}")
            mapping[reward_objective] = judge_objective
    return mapping


def resolve_objective_map(reward_objectives: Sequence[str], judge_name: str, judge_objectives: Sequence[str],
                          given: dict[str, str]) -> dict[str, str]:
    """Every reward objective -> the judge objective that verifies it: the given mapping, else the same
    name. ``ValueError`` naming what is unknown or unmapped and the flag that fixes it."""
    unknown = sorted(set(given) - set(reward_objectives))
    if unknown:
        raise ValueError(f"--objective-map names {unknown}, which the reward does not have; it has "
                         f"{list(reward_objectives)}")
    foreign = sorted({j for j in given.values() if j not in judge_objectives})
    if foreign:
        raise ValueError(f"--objective-map maps to {foreign}, which judge {judge_name} does not have; it has "
                         f"{list(judge_objectives)}")
    resolved = {o: given.get(o, o) for o in reward_objectives}
    missing = [o for o, j in resolved.items() if j not in judge_objectives]
    if missing:
        example = ",".join(f"{o}={judge_objectives[0]}" for o in missing)
        raise ValueError(f"reward objective(s) {missing} have no objective of judge {judge_name} to be tuned "
                         f"against (it has {list(judge_objectives)}): map them, e.g. --objective-map {example}")
    return resolved
