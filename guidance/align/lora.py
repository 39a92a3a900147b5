"""The trained LoRA adapter on the live transformer, its reference, saving and resumable state.

The reference of Flow-DPO is the frozen base model. It is the same transformer with the adapter
disabled (:func:`adapter_disabled`): PEFT's LoRA layers then return their base layer's output
unchanged, so the reference is the base exactly and no second copy of the model is held.

The result is written in the diffusers LoRA layout (``pytorch_lora_weights.safetensors`` with the
adapter metadata: r, lora_alpha, target modules), as the diffusers training scripts write it, so
``nrg serve --checkpoint NAME=DIR`` and ``nrg generate --checkpoint DIR`` load it unchanged.

Resumable state (``align_state/`` in the output directory) is safetensors plus JSON, never a pickle:
the adapter weights, AdamW's moments and step counts, and the run's progress.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from guidance.families.base import PipelineFamily

ADAPTER = "align"
STATE_DIR = "align_state"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"


def attach_lora(family: PipelineFamily, rank: int, alpha: float, targets: Sequence[str], seed: int) -> list[torch.nn.Parameter]:
    """Freeze the transformer and add a fresh LoRA (B = 0, so it starts as the base model exactly);
    A is drawn from ``seed``. Returns the trainable parameters in a fixed order."""
    from peft import LoraConfig

    transformer = family.transformer
    if getattr(transformer, "peft_config", None):
        raise ValueError("the transformer already has LoRA adapters; align a pipeline without adapters loaded")
    if rank < 1:
        raise ValueError(f"--lora-rank must be >= 1; got {rank}")
    if not alpha > 0:
        raise ValueError(f"--lora-alpha must be > 0; got {alpha}")
    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True, lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            transformer.add_adapter(config, adapter_name=ADAPTER)
        except ValueError as exc:
            raise ValueError(f"--targets {','.join(targets)}: {exc}") from None
    params = lora_parameters(family)
    if not params:
        raise ValueError(f"--targets {','.join(targets)} match no layer of the {type(transformer).__name__}")
    return [p for _, p in params]


def lora_parameters(family: PipelineFamily) -> list[tuple[str, torch.nn.Parameter]]:
    """The adapter's parameters by name, sorted (the order of the optimizer and the state files)."""
    named = [(n, p) for n, p in family.transformer.named_parameters() if f".{ADAPTER}." in n and "lora_" in n]
    return sorted(named, key=lambda item: item[0])


@contextmanager
def adapter_disabled(family: PipelineFamily) -> Iterator[None]:
    """The base model (the reference) for the duration, without gradients; the adapter stays trainable."""
    transformer = family.transformer
    params = [p for _, p in lora_parameters(family)]
    transformer.disable_adapters()
    try:
        with torch.no_grad():
            yield
    finally:
        transformer.enable_adapters()
        for p in params:
            p.requires_grad_(True)  # PEFT's enable/disable toggles requires_grad of adapter weights


def lora_metadata(family: PipelineFamily) -> dict[str, Any]:
    config = family.transformer.peft_config[ADAPTER].to_dict()
    return json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def save_lora(family: PipelineFamily, out_dir: str | Path) -> Path:
    """Write the adapter as ``pytorch_lora_weights.safetensors`` with its metadata (diffusers layout)."""
    from peft import get_peft_model_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = get_peft_model_state_dict(family.transformer, adapter_name=ADAPTER)
    type(family.pipe).save_lora_weights(
        str(out), transformer_lora_layers={k: v.detach().cpu().contiguous() for k, v in layers.items()},
        transformer_lora_adapter_metadata=lora_metadata(family), safe_serialization=True,
    )
    return out


def save_state(out_dir: Path, family: PipelineFamily, optimizer: torch.optim.Optimizer, progress: dict[str, Any]) -> Path:
    """Write ``align_state/`` atomically: adapter weights, AdamW moments and step counts, progress JSON."""
    from safetensors.torch import save_file

    named = lora_parameters(family)
    tensors: dict[str, torch.Tensor] = {}
    steps: dict[str, float] = {}
    for name, p in named:
        tensors[f"lora::{name}"] = p.detach().cpu().contiguous()
        state = optimizer.state.get(p)
        if state:
            tensors[f"exp_avg::{name}"] = state["exp_avg"].detach().cpu().contiguous()
            tensors[f"exp_avg_sq::{name}"] = state["exp_avg_sq"].detach().cpu().contiguous()
            steps[name] = float(state["step"])
    tmp = out_dir / (STATE_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps({**progress, "optimizer_steps": steps}, indent=1) + "\n")
    final = out_dir / STATE_DIR
    old = out_dir / (STATE_DIR + ".old")
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_progress(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / STATE_DIR / STATE_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def load_state(out_dir: Path, family: PipelineFamily, optimizer: torch.optim.Optimizer) -> None:
    """Restore the adapter weights and the optimizer written by :func:`save_state`."""
    from safetensors.torch import load_file

    state_dir = out_dir / STATE_DIR
    tensors = load_file(str(state_dir / STATE_TENSORS))
    steps = json.loads((state_dir / STATE_JSON).read_text())["optimizer_steps"]
    named = lora_parameters(family)
    missing = [n for n, _ in named if f"lora::{n}" not in tensors]
    if missing or len(named) != sum(k.startswith("lora::") for k in tensors):
        raise ValueError(f"{state_dir}: the saved adapter does not match this run's LoRA layers (missing {missing[:3]})")
    with torch.no_grad():
        for name, p in named:
            p.copy_(tensors[f"lora::{name}"])
    optim_state = {}
    for index, (name, p) in enumerate(named):
        if name in steps:
            optim_state[index] = {
                "step": torch.tensor(steps[name]),
                "exp_avg": tensors[f"exp_avg::{name}"].to(p.device),
                "exp_avg_sq": tensors[f"exp_avg_sq::{name}"].to(p.device),
            }
    optimizer.load_state_dict({"state": optim_state, "param_groups": optimizer.state_dict()["param_groups"]})
