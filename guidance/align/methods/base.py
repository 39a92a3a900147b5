"""What a method declares: its options (with their flags, defaults and rules), the data it trains on,
and where its training task is built.

Every declaration is torch-free: ``nrg align`` builds its parser from them, and ``--help`` must answer
without importing torch. A method's task (a :class:`guidance.align.task.Task`, which needs torch)
lives in a ``*_task.py`` module beside its declaration, named by :attr:`Method.task` and imported only
when a run builds it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from guidance.align.config import AlignConfig
    from guidance.align.methods.frame_judge import FrameJudge
    from guidance.align.report import HeldOutPairs
    from guidance.align.scored_clips import ScoredClips
    from guidance.align.task import Task
    from guidance.families.base import PipelineFamily
    from guidance.train.preference_data import PreferenceData
    from guidance.train.reward import PromptCache

#: A rule an option's value must meet: the test, and how the error words it (``--dro-lag must be >= 1``).
Rule = tuple[Callable[[Any], bool], str]
#: What a method trains on: preference pairs (``pairs.jsonl``), scored clips (``clips.jsonl``), or
#: either (the pairs when the data set has them: their winners or prompts).
Data = Literal["pairs", "clips", "either"]
#: What a task factory returns: the task, the held-out pairs its accuracy is measured on, and the
#: report's data summary.
BuiltTask = tuple["Task", "HeldOutPairs", dict[str, Any]]


def option(default: Any, help: str, rule: Rule | None = None, *, type: Callable[[str], Any] | None = None,
           metavar: str | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A field of an :class:`Options` dataclass and the flag it is set by, declared together.

    ``help`` is the flag's help (argparse fills in ``%(default)g``); ``rule`` is checked by
    :meth:`Options.validate` unless the value is None (not given); ``type`` is the flag's (default:
    the type of ``default``), as are ``metavar`` and ``choices``.
    """
    return field(default=default, metadata={"help": help, "rule": rule, "type": type, "metavar": metavar,
                                             "choices": choices})


def flag(name: str) -> str:
    """The flag that sets an option: ``dro_lag`` -> ``--dro-lag`` (the field's name is the flag's dest)."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Options:
    """A group of options, one frozen dataclass of :func:`option` fields: a method's own, or a group
    several methods take (online sampling, a composable option such as IS-DAA).

    Field names are flat and unique across every group, so a run's settings can be stored as one
    flat mapping (the report's ``args``) and read back whatever the grouping.
    """

    #: The title of the group's flags in ``nrg align --help``.
    title: ClassVar[str]
    #: For an option that composes with other methods' losses: the field that switches it on (given
    #: when not None). Giving it with a method that does not take the group is an error.
    switch: ClassVar[str | None] = None

    def validate(self) -> None:
        """Each field's rule; subclasses add the rules between their fields."""
        for f in fields(self):
            value, rule = getattr(self, f.name), f.metadata["rule"]
            if rule is not None and value is not None and not rule[0](value):
                shown = repr(value) if isinstance(value, str) else value
                raise ValueError(f"{flag(f.name)} must be {rule[1]}; got {shown}")

    @classmethod
    def add_flags(cls, group: argparse._ActionsContainer) -> None:
        """One flag per field, with the field's default."""
        for f in fields(cls):
            meta = f.metadata
            group.add_argument(flag(f.name), type=meta["type"] or type(f.default), default=f.default, help=meta["help"],
                               metavar=meta["metavar"], choices=meta["choices"])


@dataclass(frozen=True)
class TaskInputs:
    """What a method's task factory is given: the run's model, data, settings and objective weights."""

    family: PipelineFamily
    data: PreferenceData | ScoredClips
    config: AlignConfig
    weights: dict[str, float]
    prompts: PromptCache
    #: Preference pairs whose test split measures held-out accuracy (for the methods on clips).
    eval_pairs: PreferenceData | None = None
    #: What scores decoded frames (SPRO's ``--judge demo``), handed in by the caller.
    frame_judge: FrameJudge | None = None


def _no_rules(config: AlignConfig) -> None:
    """A method without rules of its own."""


def _no_frame_judge(config: AlignConfig) -> bool:
    return False


@dataclass(frozen=True)
class Method:
    """One ``--method``: the data it trains on, the option groups it takes (its own, then shared and
    composable ones), its task factory and the rules that hold only for it."""

    name: str
    data: Data
    options: tuple[type[Options], ...]
    #: ``"module:function"``: the factory ``function(TaskInputs) -> BuiltTask``, in a module that
    #: needs torch (imported by :meth:`build`).
    task: str
    #: Rules on the run's settings that hold only for this method (e.g. SPO needs a reward model).
    check: Callable[[AlignConfig], None] = _no_rules
    #: Whether a run scores with the caller's frame judge (``TaskInputs.frame_judge``), which the
    #: caller then provides: guidance has none of its own.
    uses_frame_judge: Callable[[AlignConfig], bool] = _no_frame_judge

    def build(self, inputs: TaskInputs) -> BuiltTask:
        module, _, function = self.task.partition(":")
        return getattr(importlib.import_module(module), function)(inputs)
