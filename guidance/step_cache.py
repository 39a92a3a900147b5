"""First-block caching per row of a continuous batch: skip most of a denoiser call for the rows whose
first block barely changed since their last full call.

diffusers' FirstBlockCache (``diffusers.hooks.first_block_cache``, after ParaAttention's FBCache) runs the
transformer's first block, compares its residual (output - input) with the one of the last step that ran
every block, and when the relative mean absolute difference is under a threshold reuses the cached
residual of the remaining blocks instead of running them. It decides once for the whole batch, and keeps
one state per cache context (diffusers' ``cache_context``, one per CFG half). A batch of nrg-serve holds
rows at different steps of different requests, each with its own threshold, CFG half and LoRA adapter,
joining and leaving between steps: one decision for all rows would reuse one row's residuals for another.

So the decision here is per row, with one state per (row, CFG half) in every denoiser it is attached
to (Wan 2.2's experts each have their own): the first block runs on every row; the remaining blocks run
once, on the rows that must compute, and the others get their first block's output plus their own cached
residual. The hooks are diffusers' (``HookRegistry``, ``ModelHook``) on the blocks of the transformer:
the first block's hook runs the rest for the computing rows (their per-row arguments sliced to them,
their LoRA routing narrowed to them), and the other blocks' hooks pass the result through the
transformer's own loop. Outside :meth:`RowStepCache.rows` every hook is inert, so the clean estimate a
judge differentiates, the reward trunk and any call without rows are never cached.

Only families whose blocks take and return the hidden states alone are supported (Wan's ``blocks``:
``PipelineFamily.step_cacheable``); :class:`StepCache` refuses the others.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook

HEAD_HOOK = "nrg_step_cache_head"
TAIL_HOOK = "nrg_step_cache_tail"


@dataclass
class _RowState:
    """What a row keeps between its calls: its first block's residual at its last full call, and the
    residual of the remaining blocks then."""

    head_residual: torch.Tensor
    tail_residual: torch.Tensor


@dataclass
class _Call:
    """The rows of the denoiser call under way: their keys, thresholds, how to narrow the LoRA routing to a
    subset of them, and what the call did."""

    keys: Sequence[Hashable]
    thresholds: Sequence[float]
    narrow: Callable[[list[int]], AbstractContextManager[object]]
    skipped: list[int] = field(default_factory=list)
    in_tail: bool = False


class RowStepCache:
    """First-block caching per row for one transformer (see the module docstring)."""

    def __init__(self, transformer: torch.nn.Module, block_list: str) -> None:
        blocks = getattr(transformer, block_list, None)
        if not isinstance(blocks, torch.nn.ModuleList) or len(blocks) < 2:
            raise ValueError(f"step caching needs a list of at least two blocks at {block_list!r}")
        self._blocks = list(blocks)
        self._states: dict[Hashable, _RowState] = {}
        self._call: _Call | None = None
        HookRegistry.check_if_exists_or_initialize(self._blocks[0]).register_hook(_HeadHook(self), HEAD_HOOK)
        for block in self._blocks[1:]:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(_TailHook(self), TAIL_HOOK)

    @contextmanager
    def rows(self, keys: Sequence[Hashable], thresholds: Sequence[float],
             narrow: Callable[[list[int]], AbstractContextManager[object]] | None = None) -> Iterator[list[int]]:
        """Within this block, one denoiser call of rows with these ``keys`` and ``thresholds`` (0: always
        compute, nothing kept) is cached row by row. ``narrow(rows)`` is entered around the
        remaining blocks run for a subset of the rows (the LoRA routing of that subset). Yields the list
        that receives the positions of the rows whose remaining blocks were skipped."""
        if len(keys) != len(thresholds):
            raise ValueError(f"{len(keys)} keys for {len(thresholds)} thresholds")
        call = _Call(keys, thresholds, narrow or (lambda rows: nullcontext()))
        self._call = call
        try:
            yield call.skipped
        finally:
            self._call = None

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop these rows' states (rows that left the batch; a key's row never comes back)."""
        for key in keys:
            self._states.pop(key, None)

    def remove(self) -> None:
        HookRegistry.check_if_exists_or_initialize(self._blocks[0]).remove_hook(HEAD_HOOK, recurse=False)
        for block in self._blocks[1:]:
            HookRegistry.check_if_exists_or_initialize(block).remove_hook(TAIL_HOOK, recurse=False)
        self._states.clear()

    # -- the first block's hook ------------------------------------------------------------------
    @torch.compiler.disable
    def _head(self, original: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        call = self._call
        hidden = args[0]
        out = original(*args, **kwargs)
        batch = out.shape[0]
        if len(call.keys) != batch:
            raise ValueError(f"step cache: {len(call.keys)} rows announced, the denoiser call has {batch}")
        residual = out - hidden
        skip = self._decisions(call, residual)
        compute = [row for row in range(batch) if row not in skip]
        tail = self._run_tail(call, compute, out, args[1:], kwargs) if compute else None
        for j, row in enumerate(compute):
            if call.thresholds[row] > 0:
                self._states[call.keys[row]] = _RowState(residual[row].detach().clone(), (tail[j] - out[row]).detach())
        if not skip:
            return tail
        final = out.clone()
        if compute:
            final[compute] = tail
        for row in skip:
            final[row] = out[row] + self._states[call.keys[row]].tail_residual
        call.skipped.extend(sorted(skip))
        return final

    def _decisions(self, call: _Call, residual: torch.Tensor) -> set[int]:
        """The rows whose first-block residual moved by less than their threshold, relative to the one at
        their last full call (FBCache's test: mean |r - r_prev| / mean |r_prev|); one host read."""
        rows = [row for row, key in enumerate(call.keys) if call.thresholds[row] > 0 and key in self._states]
        if not rows:
            return set()
        previous = torch.stack([self._states[call.keys[row]].head_residual for row in rows]).float()
        current = residual[rows].float()
        change = ((current - previous).abs().flatten(1).mean(1) / previous.abs().flatten(1).mean(1)).tolist()
        return {row for row, value in zip(rows, change) if value < call.thresholds[row]}

    def _run_tail(self, call: _Call, compute: list[int], out: torch.Tensor, args: tuple,
                  kwargs: dict) -> torch.Tensor:
        """The remaining blocks on the computing rows, their per-row arguments sliced to them."""
        batch = out.shape[0]
        whole = len(compute) == batch
        index = None if whole else torch.tensor(compute, device=out.device)
        pick = (lambda value: value) if whole else (lambda value: _rows_of(value, index, batch))
        hidden = out if whole else out[index]
        rest = tuple(pick(value) for value in args)
        named = {name: pick(value) for name, value in kwargs.items()}
        call.in_tail = True
        try:
            with call.narrow(compute):
                for block in self._blocks[1:]:
                    hidden = block(hidden, *rest, **named)
        finally:
            call.in_tail = False
        return hidden


def _rows_of(value: object, index: torch.Tensor, batch: int) -> object:
    """A block argument for a subset of the rows: tensors batched on dim 0 (and tuples of them) are
    indexed, anything else (rotary tables shared by every row) passes as it is."""
    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, tuple):
        return tuple(_rows_of(item, index, batch) for item in value)
    return value


class _HeadHook(ModelHook):
    """On the first block: inert outside a call of rows."""

    def __init__(self, cache: RowStepCache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        original = self.fn_ref.original_forward
        if self.cache._call is None:
            return original(*args, **kwargs)
        return self.cache._head(original, args, kwargs)


class _TailHook(ModelHook):
    """On the other blocks: within a call of rows, the transformer's own loop
    passes the first block's hook's result through them; the first block's hook runs them itself."""

    def __init__(self, cache: RowStepCache) -> None:
        super().__init__()
        self.cache = cache

    def new_forward(self, module: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        call = self.cache._call
        if call is None or call.in_tail:
            return self.fn_ref.original_forward(*args, **kwargs)
        return args[0] if args else kwargs["hidden_states"]


#: The CFG halves a row's states are kept for.
HALVES = ("cond", "uncond")


def refuse_with_compile(threshold: float, compiled: bool) -> None:
    """``ValueError`` when caching (``threshold`` > 0) would run on a compiled denoiser: the cache decides per
    row between the blocks, which a compiled denoiser would break its graphs on (``nrg serve``, ``nrg generate``)."""
    if threshold > 0 and compiled:
        raise ValueError("--step-cache and --compile do not go together yet: the cache decides per row between "
                         "the blocks, which a compiled denoiser would break its graphs on")


class StepCache:
    """A :class:`RowStepCache` on every denoiser of a family (Wan 2.2's two experts each have one). A row's
    key is (its sample id, its CFG half): particles of a search sample share an id, so their rows are
    never cached (threshold 0)."""

    def __init__(self, family, threshold: float = 0.0) -> None:
        if not 0 <= threshold < float("inf"):
            raise ValueError(f"a step cache threshold must be a finite number >= 0; got {threshold!r}")
        #: The threshold of the samples that do not set their own (a server's ``--step-cache``).
        self.threshold = threshold
        if not family.step_cacheable:
            raise ValueError(f"step caching supports Wan models (their blocks take and return the hidden states "
                             f"alone); this model is {family.label}")
        self.experts = [RowStepCache(model, family.block_lists[0]) for model in family.denoisers]

    def forget(self, sample_ids: Iterable[Hashable]) -> None:
        """Drop the states of samples that left the batch."""
        keys = [(sid, half) for sid in sample_ids for half in HALVES]
        for expert in self.experts:
            expert.forget(keys)

    def remove(self) -> None:
        for expert in self.experts:
            expert.remove()
