"""Named aligned checkpoints of one loaded pipeline, picked per request by name.

The server registers checkpoints at start (``nrg serve --checkpoint NAME=DIR``, repeatable) for one
pipeline, and each request may name one. Switching must not reload the base model, so every
checkpoint is loaded once, here, and the live transformer is switched in place:

* **LoRA** (a diffusers ``pytorch_lora_weights.safetensors`` or a PEFT ``adapter_model.safetensors``
  + ``adapter_config.json``): loaded as a named PEFT adapter through diffusers; switching enables,
  selects or disables adapters, which costs nothing but a few flags.
* **Full transformer weights** (``config.json`` + ``diffusion_pytorch_model.safetensors``, or sharded
  with an index): the state dict stays in host memory and is copied into the live transformer's
  tensors when activated; a host copy of the base weights restores the base model. Two transformer
  modules never sit on the device at once.

Everything is validated and loaded at construction, so a bad directory stops the server at start
with an error naming the checkpoint and the directory, not at the first request that names it.
Only safetensors files are ever read: a pickle file can run code when loaded.

Two ways to use a LoRA: ``activate`` it (diffusers' own adapter path, for a whole batch, as
``nrg generate --checkpoint`` does), or keep the base model active and let ``multi_lora`` apply each
sample's adapter and scale per row (``guidance.multi_lora``), which is how the server mixes LoRA
checkpoints, scales and the base model in one batch.

Thread safety: ``activate`` mutates the shared pipeline and takes no lock. Only the engine's single
worker thread may call it, between batches; jobs of different full-weight checkpoints never share a
batch, so the active weights are constant while a batch runs.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from guidance.families.base import PipelineFamily
from guidance.multi_lora import MultiLora

log = logging.getLogger(__name__)

CheckpointKind = Literal["lora", "full"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
PEFT_LORA_FILE = "adapter_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
FULL_CONFIG_FILE = "config.json"
FULL_WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
FULL_INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

EXPECTED_LAYOUTS = (
    f"{DIFFUSERS_LORA_FILE} (diffusers LoRA, as written by save_lora_weights); "
    f"{PEFT_LORA_FILE} + {PEFT_CONFIG_FILE} (PEFT LoRA adapter); "
    f"{FULL_CONFIG_FILE} + {FULL_WEIGHTS_FILE} or {FULL_INDEX_FILE} with its shards (full transformer weights)"
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be registered: bad name, missing directory, unknown layout, mismatch."""


class UnknownCheckpointError(KeyError):
    """A checkpoint name that was never registered (a ``KeyError``, so callers can map it to 404)."""

    def __str__(self) -> str:
        # KeyError's own str() is the repr of its argument, which would quote the whole message.
        return str(self.args[0])


@dataclass
class _Full:
    """A full-weights checkpoint: host tensors keyed like the base transformer's state dict."""

    state: dict[str, torch.Tensor]


@dataclass
class _Lora:
    """A LoRA checkpoint, loaded into the transformer as the PEFT adapter ``adapter``."""

    adapter: str


class CheckpointRegistry:
    """The named checkpoints of one pipeline and which of them (or the base model) is active.

    ``checkpoints`` maps names to local directories; the kind of each is recognised from the files it
    holds. Construction loads them all and leaves the base model active.
    """

    def __init__(self, family: PipelineFamily, checkpoints: Mapping[str, str | Path]) -> None:
        self.family = family
        self._active: str | None = None
        self._weights: str | None = None  # the full checkpoint whose weights are live; None = base
        self._entries: dict[str, _Full | _Lora] = {}
        self._base: dict[str, torch.Tensor] = {}
        layouts = {name: _detect_layout(name, Path(path).expanduser()) for name, path in checkpoints.items()}
        if not layouts:
            return
        self._check_pipeline(layouts)
        base_config = _init_config(type(self.family.transformer), dict(self.family.transformer.config))
        base_keys = {k: v.shape for k, v in self.family.transformer.state_dict().items()}
        for name, (kind, path) in layouts.items():
            if kind == "full":
                self._entries[name] = _Full(self._load_full(name, path, base_config, base_keys))
        if any(isinstance(e, _Full) for e in self._entries.values()):
            self._base = {key: _host_copy(t, self._pin) for key, t in self._live_tensors(base_keys).items()}
        try:
            for index, (name, (kind, path)) in enumerate(layouts.items()):
                if kind != "full":
                    self._entries[name] = _Lora(self._load_lora(name, kind, path, index))
        except BaseException:
            # Leave the pipeline as it was given (it had no adapters), so a caller that handles the
            # error can go on using it.
            loaded = list(getattr(self.family.transformer, "peft_config", None) or {})
            if loaded:
                self.family.pipe.delete_adapters(loaded)
            raise
        # Keep registration order in the listing (full checkpoints were loaded first).
        self._entries = {name: self._entries[name] for name in layouts}
        #: Every LoRA checkpoint applied per sample within one batch (``guidance.multi_lora``).
        self.multi_lora: MultiLora | None = None
        if self._loras:
            self.family.pipe.disable_lora()
            self._freeze()
            self.multi_lora = MultiLora(self.family.transformer, {
                name: entry.adapter for name, entry in self._entries.items() if isinstance(entry, _Lora)})

    @property
    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    @property
    def active(self) -> str | None:
        """The active checkpoint; ``None`` while the base model is active."""
        return self._active

    def kind(self, name: str) -> CheckpointKind:
        return "full" if isinstance(self._entry(name), _Full) else "lora"

    def describe(self) -> list[dict[str, str]]:
        """One ``{"name", "kind"}`` per checkpoint for the model listing (directories stay private)."""
        return [{"name": name, "kind": self.kind(name)} for name in self._entries]

    def activate(self, name: str | None) -> None:
        """Make ``name`` (or the base model for ``None``) the active checkpoint.

        Free when it already is. Otherwise a LoRA switch flips adapter flags, and a full checkpoint
        (or leaving one) copies a whole transformer's weights from host memory into the live tensors.
        Only the engine's worker thread calls this (see the module docstring).
        """
        if name == self._active:
            return
        entry = None if name is None else self._entry(name)
        pipe = self.family.pipe
        if isinstance(entry, _Full):
            self._load_weights(name, entry.state)
            if self._loras:
                pipe.disable_lora()
        elif isinstance(entry, _Lora):
            self._load_weights(None, self._base)
            pipe.enable_lora()
            pipe.set_adapters([entry.adapter])
            self._freeze()
        else:
            self._load_weights(None, self._base)
            if self._loras:
                pipe.disable_lora()
        self._active = name

    # -- internals -------------------------------------------------------------------------------

    @property
    def _loras(self) -> list[str]:
        return [e.adapter for e in self._entries.values() if isinstance(e, _Lora)]

    @property
    def _pin(self) -> bool:
        """Page-locked host copies make the host-to-device copy of a switch asynchronous and faster."""
        return self.family.transformer.device.type == "cuda"

    def _entry(self, name: str) -> _Full | _Lora:
        if name not in self._entries:
            registered = ", ".join(self._entries) or "none"
            raise UnknownCheckpointError(f"unknown checkpoint {name!r}; registered checkpoints: {registered}")
        return self._entries[name]

    def _check_pipeline(self, layouts: Mapping[str, tuple[str, Path]]) -> None:
        pipe = self.family.pipe
        if getattr(pipe, "transformer_2", None) is not None:
            # A checkpoint applied to one expert only would silently serve a half-aligned model.
            raise CheckpointError(
                "checkpoints are not supported on two-expert pipelines (Wan 2.2 A14B: transformer and transformer_2)"
            )
        if getattr(self.family.transformer, "peft_config", None):
            raise CheckpointError(
                "the pipeline already has LoRA adapters loaded; register every checkpoint through CheckpointRegistry"
            )
        loras = [name for name, (kind, _) in layouts.items() if kind != "full"]
        if loras and not hasattr(pipe, "load_lora_weights"):
            raise CheckpointError(f"{type(pipe).__name__} cannot load LoRA adapters (checkpoints {loras})")

    def _live_tensors(self, keys: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The transformer's parameters and buffers under their base names.

        Resolved at each switch rather than cached: PEFT wraps each adapted layer (its weight then
        appears as ``...base_layer.weight``), and moving the module may replace tensors.
        """
        from peft.tuners.tuners_utils import BaseTunerLayer

        transformer = self.family.transformer
        live = {}
        for key in keys:
            module_path, _, attr = key.rpartition(".")
            module = transformer.get_submodule(module_path)
            if isinstance(module, BaseTunerLayer):
                module = module.get_base_layer()
            live[key] = getattr(module, attr)
        return live

    @torch.no_grad()
    def _load_weights(self, name: str | None, state: Mapping[str, torch.Tensor]) -> None:
        if name == self._weights:
            return
        for key, tensor in self._live_tensors(state).items():
            tensor.copy_(state[key], non_blocking=True)
        self._weights = name

    def _freeze(self) -> None:
        """PEFT marks active adapters trainable; serving needs no parameter gradients."""
        self.family.transformer.requires_grad_(False)

    def _load_full(
        self, name: str, path: Path, base_config: dict[str, Any], base_keys: Mapping[str, torch.Size]
    ) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        transformer = self.family.transformer
        cls = type(transformer)
        config = _read_json(name, path / FULL_CONFIG_FILE)
        if config.get("_class_name") != cls.__name__:
            raise CheckpointError(
                f"checkpoint {name!r} ({path}) holds a {config.get('_class_name')!r}; "
                f"the served transformer is a {cls.__name__}"
            )
        differences = [
            f"{key}: {value!r} (served: {base_config[key]!r})"
            for key, value in _init_config(cls, config).items()
            if value != base_config[key]
        ]
        if differences:
            raise CheckpointError(
                f"checkpoint {name!r} ({path}) has another transformer configuration than the served model: "
                + "; ".join(differences)
            )
        state: dict[str, torch.Tensor] = {}
        for shard in _weight_files(name, path):
            try:
                state.update(load_file(str(shard), device="cpu"))
            except Exception as exc:
                raise CheckpointError(f"checkpoint {name!r}: cannot read {shard}: {exc}") from exc
        missing = sorted(set(base_keys) - set(state))
        unexpected = sorted(set(state) - set(base_keys))
        wrong = sorted(k for k in set(state) & set(base_keys) if state[k].shape != base_keys[k])
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"checkpoint {name!r} ({path}) does not match the served transformer's weights: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}"
            )
        live = self._live_tensors(base_keys)
        # Stored in the serving dtype so a switch is a plain copy and host memory is one model size;
        # popped one by one so loading never holds two copies of the whole checkpoint.
        host = {}
        for key in list(state):
            tensor = state.pop(key).to(live[key].dtype)
            host[key] = tensor.pin_memory() if self._pin else tensor
        return host

    def _load_lora(self, name: str, kind: str, path: Path, index: int) -> str:
        # PEFT module dicts reject "." in adapter names; the index keeps "a.b" and "a_b" apart.
        adapter = f"ckpt{index}-{name.replace('.', '_')}"
        pipe = self.family.pipe
        transformer = self.family.transformer
        try:
            with warnings.catch_warnings():
                # PEFT warns on every adapter after the first; several adapters are the point here.
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                if kind == "diffusers-lora":
                    _warn_without_alpha(name, path / DIFFUSERS_LORA_FILE)
                    pipe.load_lora_weights(
                        str(path), adapter_name=adapter, weight_name=DIFFUSERS_LORA_FILE,
                        use_safetensors=True, local_files_only=True,
                    )
                else:
                    state, metadata = _read_peft_adapter(name, path)
                    transformer.load_lora_adapter(
                        state, prefix=None, adapter_name=adapter, metadata=metadata, _pipeline=pipe
                    )
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"checkpoint {name!r}: cannot load the LoRA in {path}: {exc}") from exc
        if adapter not in (getattr(transformer, "peft_config", None) or {}):
            raise CheckpointError(
                f"checkpoint {name!r}: no weight in the LoRA in {path} matches a layer of the served "
                f"{type(transformer).__name__} (is it a LoRA for another model?)"
            )
        return adapter


def _detect_layout(name: str, path: Path) -> tuple[str, Path]:
    """Validate the name and recognise the directory: ("diffusers-lora" | "peft-lora" | "full", path)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CheckpointError(
            f"invalid checkpoint name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        )
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise CheckpointError(f"checkpoint {name!r}: {path} {what}")
    files = {p.name for p in path.iterdir() if p.is_file()}
    found = []
    if DIFFUSERS_LORA_FILE in files:
        found.append("diffusers-lora")
    if PEFT_LORA_FILE in files and PEFT_CONFIG_FILE in files:
        found.append("peft-lora")
    if FULL_CONFIG_FILE in files and (FULL_WEIGHTS_FILE in files or FULL_INDEX_FILE in files):
        found.append("full")
    if len(found) > 1:
        raise CheckpointError(f"checkpoint {name!r}: {path} holds several checkpoints ({', '.join(found)}); keep one")
    if found:
        return found[0], path
    pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
    hint = ""
    if pickles:
        hint = f"; pickle files ({', '.join(pickles)}) are never loaded, convert them to safetensors"
    elif (path / "transformer" / FULL_CONFIG_FILE).is_file():
        hint = f"; for a whole pipeline directory, register {path / 'transformer'}"
    raise CheckpointError(
        f"checkpoint {name!r}: no checkpoint recognised in {path} (files: {', '.join(sorted(files)) or 'none'}); "
        f"expected one of: {EXPECTED_LAYOUTS}{hint}"
    )


def _init_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments a config stands for, with defaults filled in and JSON-normalised
    (a config written by an older diffusers may omit keys added since, and tuples load as lists)."""
    args = {}
    for key, param in inspect.signature(cls.__init__).parameters.items():
        if key == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = None if param.default is param.empty else param.default
        args[key] = config.get(key, default)
    return json.loads(json.dumps(args, default=str))


def _read_json(name: str, path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {name!r}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {name!r}: {path} is not a JSON object")
    return data


def _weight_files(name: str, path: Path) -> list[Path]:
    if (path / FULL_WEIGHTS_FILE).is_file():
        return [path / FULL_WEIGHTS_FILE]
    weight_map = _read_json(name, path / FULL_INDEX_FILE).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"checkpoint {name!r}: {path / FULL_INDEX_FILE} has no weight_map")
    shards = [path / shard for shard in sorted(set(weight_map.values()))]
    for shard in shards:
        if shard.suffix != ".safetensors" or shard.parent != path or not shard.is_file():
            raise CheckpointError(
                f"checkpoint {name!r}: shard {shard} named in {FULL_INDEX_FILE} is not a safetensors file in {path}"
            )
    return shards


def _read_peft_adapter(name: str, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A PEFT adapter's weights keyed by transformer module path, and its ``LoraConfig`` as kwargs.

    The pipeline's ``load_lora_weights`` cannot take the adapter config with an in-memory state dict,
    and without it diffusers would assume lora_alpha = r, so the adapter goes straight to the
    transformer's ``load_lora_adapter`` with the config as metadata.
    """
    from peft import LoraConfig
    from safetensors.torch import load_file

    peft_type = _read_json(name, path / PEFT_CONFIG_FILE).get("peft_type")
    if peft_type != "LORA":
        raise CheckpointError(f"checkpoint {name!r}: {path / PEFT_CONFIG_FILE} is a {peft_type!r} adapter, not LORA")
    metadata = LoraConfig.from_pretrained(str(path)).to_dict()
    state = load_file(str(path / PEFT_LORA_FILE), device="cpu")
    # PeftModel.save_pretrained prefixes keys with "base_model.model."; get_peft_model_state_dict does not.
    return {key.removeprefix("base_model.model."): value for key, value in state.items()}, metadata


def _warn_without_alpha(name: str, file: Path) -> None:
    """Diffusers loads a LoRA file without adapter metadata at lora_alpha = r (scale 1): say so, as a
    LoRA trained with r=64, alpha=128 would then act at half strength."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        has_metadata = "lora_adapter_metadata" in (f.metadata() or {})
        has_alphas = any(key.endswith(".alpha") for key in f.keys())
    if not (has_metadata or has_alphas):
        log.warning(
            "checkpoint %r: %s has no LoRA adapter metadata, so it is applied with lora_alpha = r; if it was "
            "trained with another alpha, save it with save_lora_weights(..., transformer_lora_adapter_metadata=...)",
            name, file,
        )


def _host_copy(tensor: torch.Tensor, pin: bool) -> torch.Tensor:
    """A CPU copy that never aliases ``tensor`` (the live weights are overwritten later)."""
    copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=pin)
    copy.copy_(tensor.detach())
    return copy
