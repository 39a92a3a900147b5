"""Several LoRA adapters in one denoiser call, one per sample, each at its own scale (S-LoRA / Punica).

diffusers applies one set of active adapters to the whole batch. Here the adapters stay loaded but
disabled in PEFT (the layers compute the base model), and a forward hook on every LoRA-wrapped linear
adds ``coef_b * B_a(b) A_a(b) x_b`` per row ``b``, with ``a(b)`` the sample's adapter (or none) and
``coef_b`` its requested scale times the adapter's ``alpha / r`` (``kernels.lora_batch``). So samples
with different adapters, no adapter and different scales share one call, and a sample without an
adapter (or at scale 0) gets the base model's output exactly.

The routing is set around each denoiser call of the batch (``routing``), for exactly the rows that
call sees (CFG's unconditional rows, one expert's rows): outside it the hooks do nothing.

Each hooked layer keeps its stacked adapters as non-persistent buffers of its own, in its base
weight's dtype and device, and the hook reads them from the layer it is called on. Under
``torch.compile`` (``guidance.compilation``) the hooks are traced into the denoiser's graph: buffers
are graph inputs, so one graph serves every layer and block, where a lookup by the layer's identity
would compile a graph per layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from kernels.lora_batch import lora_batch


#: The buffers each hooked layer holds: A stacked [n, R, in] (zeros for adapters that do not target
#: the layer), B stacked [n, out, R], and alpha / r per adapter [n] float32 (0 where absent).
A_STACK, B_STACK, SCALING = "nrg_lora_a", "nrg_lora_b", "nrg_lora_scaling"


class MultiLora:
    """The LoRA adapters of ``transformer`` (PEFT names -> our names, in index order), applied per row."""

    def __init__(self, transformer: torch.nn.Module, adapters: Mapping[str, str]) -> None:
        from peft.tuners.lora import LoraLayer

        self.names = list(adapters)  # our names (the checkpoints'), index = position
        peft_names = list(adapters.values())
        self._route: tuple[torch.Tensor, torch.Tensor] | None = None
        self._modules: list[LoraLayer] = []
        self._hooks = []
        for module in transformer.modules():
            if not isinstance(module, LoraLayer) or not any(name in module.lora_A for name in peft_names):
                continue
            if not isinstance(module.get_base_layer(), torch.nn.Linear):
                raise ValueError(f"per-sample LoRA supports linear layers only; {type(module.get_base_layer())}")
            if any(module.use_dora.get(name, False) for name in peft_names):
                raise ValueError("per-sample LoRA does not support DoRA adapters")
            for name, tensor in zip((A_STACK, B_STACK, SCALING), self._stack(module, peft_names)):
                module.register_buffer(name, tensor, persistent=False)
            self._modules.append(module)
            self._hooks.append(module.register_forward_hook(self._hook))

    def index(self, name: str | None) -> int:
        """The adapter index of a checkpoint name (-1 for none)."""
        if name is None:
            return -1
        if name not in self.names:
            raise ValueError(f"unknown LoRA checkpoint {name!r}; loaded: {', '.join(self.names) or 'none'}")
        return self.names.index(name)

    @contextmanager
    def routing(self, index: torch.Tensor, scale: torch.Tensor) -> Iterator[None]:
        """Within this block, row ``b`` of every hooked layer's input gets adapter ``index[b]`` (-1:
        none) at ``scale[b]``; the routing it was entered in comes back after it (the step cache narrows a
        call's routing to the rows that run its later blocks). PEFT's own adapters must be disabled (the
        base model active)."""
        if any(not module.disable_adapters for module in self._modules[:1]):
            raise RuntimeError("per-sample LoRA needs PEFT's adapters disabled (the base model active)")
        previous, self._route = self._route, (index, scale.float())
        try:
            yield
        finally:
            self._route = previous

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        for module in self._modules:
            for name in (A_STACK, B_STACK, SCALING):
                delattr(module, name)
        self._modules.clear()

    def _hook(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self._route is None:
            return None
        index, scale = self._route
        x = inputs[0]
        a_stack, b_stack = getattr(module, A_STACK), getattr(module, B_STACK)
        if a_stack.device != x.device or a_stack.dtype != x.dtype:  # an input unlike the base weights
            a_stack, b_stack = a_stack.to(x.device, x.dtype), b_stack.to(x.device, x.dtype)
        index = index.to(x.device)
        coef = scale.to(x.device) * getattr(module, SCALING).to(x.device)[index.clamp_min(0)] * (index >= 0)
        if output.requires_grad or not output.is_contiguous():
            return output + lora_batch(x, a_stack, b_stack, index, coef).to(output.dtype)
        # Inference: the delta goes into the layer's output in place (no temporary of its size).
        return lora_batch(x, a_stack, b_stack, index, coef, out=output)

    @staticmethod
    @torch.no_grad()
    def _stack(module, peft_names: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The layer's adapters stacked (see ``A_STACK``), in its base weight's dtype and device: the
        dtype its inputs come in (PEFT may keep the adapters themselves in float32)."""
        base = module.get_base_layer()
        present = [name for name in peft_names if name in module.lora_A]
        rank = max(module.lora_A[name].weight.shape[0] for name in present)
        weight = base.weight
        a_stack = weight.new_zeros((len(peft_names), rank, base.in_features))
        b_stack = weight.new_zeros((len(peft_names), base.out_features, rank))
        scaling = torch.zeros(len(peft_names), dtype=torch.float32, device=weight.device)
        for i, name in enumerate(peft_names):
            if name not in module.lora_A:
                continue
            a, b = module.lora_A[name].weight, module.lora_B[name].weight
            a_stack[i, : a.shape[0]] = a
            b_stack[i, :, : b.shape[1]] = b
            scaling[i] = float(module.scaling[name])
        return a_stack, b_stack, scaling
