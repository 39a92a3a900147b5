"""``nrg eval --tune``'s outcome as a person reads it: the choice on the tuning seeds, then the verdict on
the report seeds, the judge's figures first and the reward's own beside them."""

from __future__ import annotations

from guidance.tuning.paired_change import PairedChange
from guidance.tuning.tune import TuneOutcome


def _cell(change: PairedChange) -> str:
    """``+25.0% (3 won, 1 lost, 0 tied)``: the net share of clips improved and its counts."""
    j = change.judge
    return f"{100 * change.net_share:+.1f}% ({j.wins} won, {j.losses} lost, {j.ties} tied)"


def _tuning_lines(outcome: TuneOutcome) -> list[str]:
    objectives = list(outcome.objective_map)
    heads = [f"{o} -> {outcome.objective_map[o]}" for o in objectives]
    prompts, seeds = len(outcome.config.prompts), outcome.tune_seeds
    lines = [
        (f"tuning: {prompts * len(seeds)} clips per row ({prompts} prompts x tuning seeds {seeds[0]}..{seeds[-1]}), "
         f"each reward objective guided alone, judged by {outcome.judge} (not optimised); net share of clips the "
         "judge says improved:"),
        "| strength | " + " | ".join(heads) + " | mean | judge gain (unguided spreads) |",
        "|---|" + "---|" * (len(heads) + 2),
    ]
    for score in outcome.scores:
        mark = " (chosen)" if score.strength == outcome.chosen else ""
        cells = " | ".join(_cell(score.changes[o]) for o in objectives)
        lines.append(f"| {score.strength:g}{mark} | {cells} | {100 * score.net_share:+.1f}% "
                     f"| {score.judge_gain:+.3f} |")
    if outcome.chosen is None:
        lines.append("no strength raised the judge's verdict over unguided: the reward's defaults stay as they are")
    return lines


def _report_lines(outcome: TuneOutcome) -> list[str]:
    seeds = outcome.report_seeds
    lines = [
        (f"report: {len(outcome.config.prompts)} prompts x report seeds {seeds[0]}..{seeds[-1]} (never used to "
         f"choose), guided at strength {outcome.reported_strength:g} ({outcome.config.mode}) vs unguided:"),
        (f"{'objective':<32} {'judge wins':>10} {'losses':>7} {'ties':>5} {'win rate [95% CI]':>22} "
         f"{'judge change':>13} {'reward change':>14}"),
    ]
    for objective, change in outcome.report.items():
        j, interval = change.judge, change.judge.interval()
        rate = "-" if interval is None else f"{j.rate:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"
        name = f"{objective} -> {outcome.objective_map[objective]}"
        lines.append(f"{name:<32} {j.wins:>10} {j.losses:>7} {j.ties:>5} {rate:>22} "
                     f"{change.judge_mean_change:>+13.3g} {change.reward_mean_change:>+14.3g}")
    if outcome.hacked:
        lines.append("REWARD HACKING: the reward rose while the judge fell on " + ", ".join(outcome.hacked))
    return lines


def format_outcome(outcome: TuneOutcome) -> str:
    return "\n".join(_tuning_lines(outcome) + [""] + _report_lines(outcome))
