"""Preference data sets for reward-model training: the on-disk format, its loader and a writer.

A data set is a directory (the format is documented for users in ``docs/reward_training.md``)::

    dataset.json   {"objectives": ["vq", "mq", "ta"], "description": "...", "tie_margin": {...}}
    pairs.jsonl    one pair per line:
                   {"prompt": str, "a": PATH, "b": PATH,
                    "prompt_b": str,                                 # optional: B is scored under it
                    "labels": {"vq": "A" | "B" | "tie", ...},       # a missing objective is masked
                    "split": "train" | "test",                       # optional: hash-based 10% test
                    "shape": {"frames": F, "height": H, "width": W}, # optional, see below
                    "image": IMAGE}                                  # optional: image-to-video

PATH is relative to the directory. A clip is ``.npy`` (float [F, H, W, 3] in [0, 1], or uint8) or
``.mp4`` (decoded with PyAV) and is encoded with the pipeline's VAE when the data set is loaded (each
file once; the latents are kept in memory). A ``.safetensors`` file with the key ``latents`` is
already in the pipeline's latent space, in the layout its ``prepare_latents`` gives (no batch
dimension); its video shape is the pair's ``shape`` field, or is inferred from the latent grid for
families with unpacked latents (Wan, HunyuanVideo, CogVideoX). Both clips of a pair must have the
same shape; different pairs may differ (training batches pairs of one shape).

A latents file may also carry the states the sampler passed through on the way to those latents:
``trajectory`` [S, *latents] and ``trajectory_t`` [S] (their noise levels in (0, 1), the sampler's
``t``). ``nrg train-reward --trajectory-share P`` then trains on them: the reward model is queried
during guidance on exactly such states, which forward-noising the final latents only approximates.
Both files of a pair must record the same noise levels (or neither records any).

``prompt_b`` makes a prompt-contrastive pair: clip B is scored under ``prompt_b`` instead of
``prompt`` (usually B is the same file as A and ``prompt_b`` the prompt with a word changed, so the
label says which prompt the clip matches better). Without it both clips are scored under ``prompt``.

``image`` is the first frame both clips of the pair were conditioned on (image-to-video): a PNG,
JPEG or WebP file inside the directory (``write_pairs`` writes PNGs under ``images/``). The reward
model is trained under that image's conditioning, the image fitted to the clip's size as a served
job's is (``guidance.images``). A model that needs an image needs one on every pair; a text-to-video
model takes none.

Everything is validated with errors that name the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from guidance.families.base import PipelineFamily, VideoShape
from guidance.images import read_image

DATASET_FILE = "dataset.json"
PAIRS_FILE = "pairs.jsonl"
CLIP_SUFFIXES = (".npy", ".mp4")
LATENT_SUFFIX = ".safetensors"
IMAGES_FOLDER = "images"
LATENT_KEY = "latents"
TRAJECTORY_KEY = "trajectory"
TRAJECTORY_T_KEY = "trajectory_t"

#: Label strings -> label codes of :attr:`PreferenceData.labels`.
LABELS = {"A": 0, "B": 1, "tie": 2}
A_WINS, B_WINS, TIE, MISSING = 0, 1, 2, -1
SPLITS = ("train", "test")
#: family -> {video shape: latent layout}, so prepare_latents runs once per shape and pipeline.
_LATENT_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Without an explicit ``split`` a pair is held out when the hash of (prompt, a, b) is 0 mod this.
TEST_EVERY = 10


class PreferenceDataError(ValueError):
    """An invalid data set; the message names the file, line and field."""


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    objectives: tuple[str, ...]
    description: str = ""
    tie_margin: dict[str, Any] | None = None


@dataclass(frozen=True)
class PairRecord:
    """One validated line of ``pairs.jsonl`` (files exist; their contents are not read yet)."""

    line: int
    prompt: str
    a: Path
    b: Path
    labels: dict[str, str]
    split: str
    shape: VideoShape | None = None
    prompt_b: str | None = None
    #: The first frame both clips were conditioned on (image-to-video), checked to decode.
    image: Path | None = None


@dataclass
class PreferenceData:
    """A loaded data set: clean latents of both clips of every pair, on the CPU, in float32.

    ``labels[i, k]`` is the label of pair i on ``objectives[k]``: 0 = A wins, 1 = B wins, 2 = tie,
    -1 = missing (that objective is not trained on that pair).
    """

    objectives: tuple[str, ...]
    prompts: list[str]
    latents_a: list[torch.Tensor]
    latents_b: list[torch.Tensor]
    shapes: list[VideoShape]
    labels: torch.Tensor
    test: torch.Tensor
    lines: list[int]
    description: str = ""
    #: Pairs skipped because they have no label on any of ``objectives``.
    dropped: int = 0
    root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The prompt clip B of each pair is scored under (its ``prompt_b``, else its ``prompt``).
    prompts_b: list[str] | None = None
    #: Per pair, the sampler states [S, *latents] of clip A and of clip B and their noise levels [S]
    #: (``None`` for pairs whose files record no trajectory).
    trajectories_a: list[torch.Tensor | None] | None = None
    trajectories_b: list[torch.Tensor | None] | None = None
    trajectory_t: list[torch.Tensor | None] | None = None
    #: Per pair, the image file of the first frame both clips were conditioned on (``None``: text-to-video).
    images: list[Path | None] | None = None

    def __post_init__(self) -> None:
        if self.prompts_b is None:
            self.prompts_b = list(self.prompts)
        for name in ("trajectories_a", "trajectories_b", "trajectory_t", "images"):
            if getattr(self, name) is None:
                setattr(self, name, [None] * len(self.prompts))

    def with_trajectory(self, indices: Sequence[int]) -> list[int]:
        """The pairs of ``indices`` whose clips record sampler states."""
        return [i for i in indices if self.trajectory_t[i] is not None]

    def __len__(self) -> int:
        return len(self.prompts)

    def indices(self, split: Literal["train", "test"]) -> list[int]:
        mask = self.test if split == "test" else ~self.test
        return [int(i) for i in torch.nonzero(mask).flatten()]


def default_split(prompt: str, a: str, b: str) -> str:
    """The deterministic hash split: about 1 pair in :data:`TEST_EVERY` is held out."""
    digest = hashlib.sha256(f"{prompt}\n{a}\n{b}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") % TEST_EVERY == 0 else "train"


def check_known_objectives(objectives: Sequence[str], known: Sequence[str], root: Path) -> None:
    """Raise naming the objectives a data set at ``root`` (with objectives ``known``) does not have."""
    unknown = [o for o in objectives if o not in known]
    if unknown:
        raise PreferenceDataError(
            f"objective(s) {', '.join(unknown)} not in the data set {root} (its objectives: {', '.join(known)})"
        )


def _check_objectives(objectives: Any, where: str) -> tuple[str, ...]:
    if (
        not isinstance(objectives, (list, tuple))
        or not objectives
        or not all(isinstance(o, str) and o.isidentifier() for o in objectives)
        or len(set(objectives)) != len(objectives)
    ):
        raise PreferenceDataError(
            f"{where}: objectives must be a non-empty list of unique identifiers like [\"vq\", \"mq\", \"ta\"]; "
            f"got {objectives!r}"
        )
    return tuple(objectives)


def _parse_shape(value: Any, where: str) -> VideoShape:
    if isinstance(value, VideoShape):
        return value
    keys = ("frames", "height", "width")
    if (
        not isinstance(value, dict)
        or set(value) != set(keys)
        or not all(isinstance(value[k], int) and not isinstance(value[k], bool) and value[k] > 0 for k in keys)
    ):
        raise PreferenceDataError(f"{where}: shape must be {{\"frames\": F, \"height\": H, \"width\": W}} "
                                  f"with positive integers; got {value!r}")
    return VideoShape(height=value["height"], width=value["width"], frames=value["frames"])


def write_record_line(lines: Any, row: dict[str, Any], record: dict[str, Any], where: str) -> None:
    """Write one dataset line: ``row`` plus the record's optional shape, checked (pairs and scored clips)."""
    if record.get("shape") is not None:
        shape = _parse_shape(record["shape"], f"{where}: shape")
        row["shape"] = {"frames": shape.frames, "height": shape.height, "width": shape.width}
    lines.write(json.dumps(row) + "\n")


def refuse_empty(tmp: Path, count: int, writer: str) -> None:
    """A dataset of no records is an error: remove the half-written file and say which writer got none."""
    if count == 0:
        tmp.unlink()
        raise PreferenceDataError(f"{writer}: no records")


def read_dataset_info(data_dir: str | Path) -> DatasetInfo:
    root = Path(data_dir)
    path = root / DATASET_FILE
    if not root.is_dir():
        raise FileNotFoundError(f"preference data set {root} is not a directory")
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a preference data set: {path} does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PreferenceDataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise PreferenceDataError(f"{path}: must be a JSON object")
    objectives = _check_objectives(config.get("objectives"), f"{path}: objectives")
    description = config.get("description", "")
    if not isinstance(description, str):
        raise PreferenceDataError(f"{path}: description must be a string")
    tie_margin = config.get("tie_margin")
    if tie_margin is not None and not isinstance(tie_margin, dict):
        raise PreferenceDataError(f"{path}: tie_margin must be an object (informational), e.g. {{\"vq\": 0.1}}")
    return DatasetInfo(root, objectives, description, tie_margin)


def _clip_path(root: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise PreferenceDataError(f"{where}: must be a path (string) relative to the data set; got {value!r}")
    path = Path(value)
    if path.is_absolute():
        raise PreferenceDataError(f"{where}: must be relative to the data set directory; got {value!r}")
    if path.suffix not in CLIP_SUFFIXES + (LATENT_SUFFIX,):
        raise PreferenceDataError(
            f"{where}: unsupported file type {path.suffix or '(none)'!r} in {value!r}; "
            f"use .npy or .mp4 clips, or .safetensors latents"
        )
    full = root / path
    if not full.is_file():
        raise PreferenceDataError(f"{where}: file not found: {value} (looked for {full})")
    return full


def _image_path(root: Path, value: Any, where: str) -> Path:
    """A pair's first frame: an image file inside the data set directory that decodes."""
    if not isinstance(value, str) or not value:
        raise PreferenceDataError(f"{where}: must be a path (string) relative to the data set; got {value!r}")
    full = root / value
    if Path(value).is_absolute() or not full.resolve().is_relative_to(root.resolve()):
        raise PreferenceDataError(f"{where}: must be a path inside the data set directory; got {value!r}")
    if not full.is_file():
        raise PreferenceDataError(f"{where}: file not found: {value} (looked for {full})")
    try:
        read_image(full)
    except ValueError as exc:
        raise PreferenceDataError(f"{where}: {exc}") from None
    return full


def check_objective(objective: str, objectives: Sequence[str], where: str, field: str) -> None:
    """A row's objective must be one of the data set's (``field`` names the row's object in the error)."""
    if objective not in objectives:
        raise PreferenceDataError(
            f"{where}: {field}: unknown objective {objective!r} (the data set's objectives: {', '.join(objectives)})"
        )


def row_split_and_shape(row: Mapping[str, Any], where: str, default_split: str) -> tuple[str, VideoShape | None]:
    """A row's ``split`` (``default_split`` when absent) and optional ``shape``, validated."""
    split = row.get("split")
    if split is None:
        split = default_split
    elif split not in SPLITS:
        raise PreferenceDataError(f"{where}: split must be \"train\" or \"test\"; got {split!r}")
    shape = None if row.get("shape") is None else _parse_shape(row["shape"], f"{where}: shape")
    return split, shape


def jsonl_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, "FILE line N", row)`` of every non-blank line of a JSONL file, each checked to
    be a JSON object with the ``required`` fields and a non-empty string ``prompt``; errors name the
    line and field."""
    with path.open() as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            where = f"{path.name} line {number}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PreferenceDataError(f"{where}: not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise PreferenceDataError(f"{where}: must be a JSON object")
            for key in required:
                if key not in row:
                    raise PreferenceDataError(f"{where}: missing field {key!r}")
            prompt = row.get("prompt")
            if "prompt" in required and (not isinstance(prompt, str) or not prompt.strip()):
                raise PreferenceDataError(f"{where}: prompt must be a non-empty string; got {prompt!r}")
            yield number, where, row


def read_pairs(data_dir: str | Path) -> tuple[DatasetInfo, list[PairRecord]]:
    """Read and validate ``dataset.json`` and ``pairs.jsonl`` (and that every file exists) without
    opening any clip; cheap, so a command can fail fast before loading a pipeline."""
    info = read_dataset_info(data_dir)
    path = info.root / PAIRS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{info.root} is not a preference data set: {path} does not exist")
    records = []
    images: dict[str, Path] = {}  # each image file is decoded once, however many pairs name it
    for number, where, row in jsonl_rows(path, ("prompt", "a", "b", "labels")):
        prompt = row["prompt"]
        prompt_b = row.get("prompt_b")
        if prompt_b is not None and (not isinstance(prompt_b, str) or not prompt_b.strip()):
            raise PreferenceDataError(f"{where}: prompt_b must be a non-empty string or absent; got {prompt_b!r}")
        a = _clip_path(info.root, row["a"], f"{where}: a")
        b = _clip_path(info.root, row["b"], f"{where}: b")
        if (a.suffix == LATENT_SUFFIX) != (b.suffix == LATENT_SUFFIX):
            raise PreferenceDataError(f"{where}: a and b must both be clips or both be .safetensors latents")
        labels = row["labels"]
        if not isinstance(labels, dict):
            raise PreferenceDataError(f"{where}: labels must be an object like {{\"vq\": \"A\"}}; got {labels!r}")
        clean = {}
        for objective, label in labels.items():
            check_objective(objective, info.objectives, where, "labels")
            if label is None:
                continue
            if label not in LABELS:
                raise PreferenceDataError(
                    f"{where}: labels.{objective} must be \"A\", \"B\" or \"tie\" (or null); got {label!r}"
                )
            clean[objective] = label
        split, shape = row_split_and_shape(row, where, default_split(prompt, row["a"], row["b"]))
        image = row.get("image")
        if image is not None and not (isinstance(image, str) and image in images):
            images[image] = _image_path(info.root, image, f"{where}: image")
        records.append(PairRecord(number, prompt, a, b, clean, split, shape, prompt_b,
                                  None if image is None else images[image]))
    if not records:
        raise PreferenceDataError(f"{path}: no pairs")
    return info, records


# -- reading clips and latents ------------------------------------------------------------------


def read_clip(path: str | Path) -> np.ndarray:
    """A clip as float32 [F, H, W, 3] in [0, 1] from ``.npy`` (float in [0, 1], or uint8) or ``.mp4``."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise PreferenceDataError(f"{path}: not a readable .npy array: {exc}") from None
        if array.dtype == np.uint8:
            array = array.astype(np.float32) / 255.0
        elif not np.issubdtype(array.dtype, np.floating):
            raise PreferenceDataError(f"{path}: clip must be float in [0, 1] (or uint8); got dtype {array.dtype}")
        array = array.astype(np.float32, copy=False)
        if array.size and not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
            raise PreferenceDataError(f"{path}: clip values must be finite and in [0, 1]")
    elif path.suffix == ".mp4":
        import av

        try:
            with av.open(str(path)) as container:
                images = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        except (av.FFmpegError, ValueError, IndexError) as exc:
            raise PreferenceDataError(f"{path}: not a readable video: {exc}") from None
        if not images:
            raise PreferenceDataError(f"{path}: the video has no frames")
        array = np.stack(images).astype(np.float32) / 255.0
    else:
        raise PreferenceDataError(f"{path}: a clip must be .npy or .mp4")
    if array.ndim != 4 or array.shape[-1] != 3 or min(array.shape) == 0:
        raise PreferenceDataError(f"{path}: clip must be [frames, height, width, 3]; got {tuple(array.shape)}")
    return array


def _read_tensors(path: str | Path, keys: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of ``keys`` that a safetensors file holds (only those are read) and all its keys.

    A latents file can carry its clip's sampler states beside the latents, ten times their size;
    reading by key keeps each loader from reading the other's tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            return {k: handle.get_tensor(k) for k in keys if k in names}, names
    except (SafetensorError, OSError) as exc:
        raise PreferenceDataError(f"{path}: not a readable safetensors file: {exc}") from None


def read_latents(path: str | Path) -> torch.Tensor:
    tensors, names = _read_tensors(path, (LATENT_KEY,))
    if LATENT_KEY not in tensors:
        raise PreferenceDataError(f"{path}: no tensor named {LATENT_KEY!r} (has: {', '.join(names) or 'none'})")
    latents = tensors[LATENT_KEY]
    if not latents.is_floating_point() or not bool(torch.isfinite(latents).all()):
        raise PreferenceDataError(f"{path}: latents must be finite floating-point values")
    return latents.float()


def read_trajectory(path: str | Path, latent_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The sampler states ``trajectory`` [S, *latent_shape] and their noise levels ``trajectory_t`` [S]
    of a latents file, checked; ``None`` when the file records none."""
    tensors, _ = _read_tensors(path, (TRAJECTORY_KEY, TRAJECTORY_T_KEY))
    present = [k for k in (TRAJECTORY_KEY, TRAJECTORY_T_KEY) if k in tensors]
    if not present:
        return None
    if len(present) == 1:
        missing = TRAJECTORY_T_KEY if present[0] == TRAJECTORY_KEY else TRAJECTORY_KEY
        raise PreferenceDataError(f"{path}: has {present[0]!r} but not {missing!r}; a trajectory needs both")
    states, levels = tensors[TRAJECTORY_KEY], tensors[TRAJECTORY_T_KEY]
    if levels.ndim != 1 or len(levels) < 1 or tuple(states.shape) != (len(levels), *latent_shape):
        raise PreferenceDataError(
            f"{path}: {TRAJECTORY_KEY} must be [S, {', '.join(map(str, latent_shape))}] with {TRAJECTORY_T_KEY} [S]; "
            f"got {tuple(states.shape)} and {tuple(levels.shape)}")
    if not (bool(torch.isfinite(states).all()) and bool(((levels > 0) & (levels < 1)).all())):
        raise PreferenceDataError(f"{path}: trajectory states must be finite and their noise levels in (0, 1)")
    return states.float(), levels.float()


def expected_latent_shape(family: PipelineFamily, shape: VideoShape) -> tuple[int, ...]:
    """The latent layout (without batch) that ``family.prepare_latents`` gives for ``shape``."""
    known = _LATENT_SHAPES.setdefault(family, {})
    if shape not in known:
        family.check_shape(shape)
        generator = torch.Generator(device="cpu").manual_seed(0)
        known[shape] = tuple(family.prepare_latents(shape, [generator]).shape[1:])
    return known[shape]


def infer_video_shape(family: PipelineFamily, latent_shape: Sequence[int]) -> VideoShape | None:
    """The video shape of unpacked latents ([C, F, H, W]; CogVideoX: [F, C, H, W]), checked against
    ``prepare_latents``; ``None`` where the layout does not determine it (LTX's packed tokens)."""
    pipe = family.pipe
    temporal = getattr(pipe, "vae_scale_factor_temporal", None)
    spatial = getattr(pipe, "vae_scale_factor_spatial", None)
    if len(latent_shape) != 4 or temporal is None or spatial is None:
        return None
    frames_axis = 0 if family.name == "cogvideox" else 1
    latent_frames, height, width = latent_shape[frames_axis], latent_shape[2], latent_shape[3]
    # CogVideoX 1.5 pads latent frames at the front: try the frame counts the padding allows.
    for padding in range(0, latent_frames):
        shape = VideoShape(height * spatial, width * spatial, (latent_frames - padding - 1) * temporal + 1)
        try:
            if expected_latent_shape(family, shape) == tuple(latent_shape):
                return shape
        except ValueError:
            pass
        if family.name != "cogvideox":
            break
    return None


def _pair_shape_error(record: PairRecord, what: str) -> PreferenceDataError:
    return PreferenceDataError(f"{PAIRS_FILE} line {record.line}: {what}")


def load_latents(
    family: PipelineFamily, path: Path, shape_hint: VideoShape | None, where: str
) -> tuple[torch.Tensor, VideoShape]:
    """Clean latents (float32, CPU, no batch dimension) and the video shape of one file for ``family``:
    a clip is encoded with its VAE, a latents file is checked against its latent layout. ``shape_hint``
    is the record's ``shape`` field; errors start with ``where`` (file, line and field)."""
    if path.suffix == LATENT_SUFFIX:
        try:
            latents = read_latents(path)
        except PreferenceDataError as exc:
            raise PreferenceDataError(f"{where}: {exc}") from None
        shape = shape_hint or infer_video_shape(family, latents.shape)
        if shape is None and latents.ndim > 1 and latents.shape[0] == 1:
            shape = infer_video_shape(family, latents.shape[1:])
        if shape is None:
            raise PreferenceDataError(
                f"{where}: cannot tell the video shape of latents {tuple(latents.shape)} for the {family.name} "
                "family; add \"shape\": {\"frames\": F, \"height\": H, \"width\": W} to its line"
            )
        try:
            expected = expected_latent_shape(family, shape)
        except ValueError as exc:
            raise PreferenceDataError(f"{where}: shape does not fit this pipeline: {exc}") from None
        if latents.ndim == len(expected) + 1 and latents.shape[0] == 1:
            latents = latents[0]  # tolerate a leading batch dimension of 1
        if tuple(latents.shape) != expected:
            raise PreferenceDataError(
                f"{where}: latents have shape {tuple(latents.shape)}, but this {family.name} pipeline's latents "
                f"for {shape.frames} frames of {shape.width}x{shape.height} are {expected}"
            )
    else:
        try:
            clip = read_clip(path)
        except PreferenceDataError as exc:
            raise PreferenceDataError(f"{where}: {exc}") from None
        shape = VideoShape(height=clip.shape[1], width=clip.shape[2], frames=clip.shape[0])
        if shape_hint is not None and shape_hint != shape:
            raise PreferenceDataError(f"{where}: clip is {_shape_text(shape)} but the line's shape says "
                                      f"{_shape_text(shape_hint)}")
        try:
            family.check_shape(shape)
        except ValueError as exc:
            raise PreferenceDataError(f"{where}: clip ({_shape_text(shape)}) does not fit this pipeline: {exc}") \
                from None
        latents = family.encode(torch.from_numpy(clip)[None], shape)[0].float().cpu()
    return latents, shape


def check_pair_images(records: Sequence[PairRecord], family: PipelineFamily) -> None:
    """Every pair has an image for a model that needs one, and none has one for a text-to-video model."""
    mode = family.image_input
    for record in records:
        where = f"{PAIRS_FILE} line {record.line}: image"
        if record.image is None and mode == "required":
            raise PreferenceDataError(f"{where}: missing; this {family.label} model is image-to-video: every pair "
                                      "needs the first frame its clips were conditioned on")
        if record.image is not None and mode == "none":
            raise PreferenceDataError(f"{where}: this {family.label} model is text-to-video only; it takes no image")


def load_preference_data(
    data_dir: str | Path,
    family: PipelineFamily,
    objectives: Sequence[str] | None = None,
    *,
    progress: bool = False,
) -> PreferenceData:
    """Load and validate a data set for ``family``: clips are encoded with its VAE (each file once),
    latents files are checked against its latent layout. ``objectives`` selects (and orders) a
    subset of the data set's objectives (default: all); pairs with no label on any of them are
    dropped (counted in :attr:`PreferenceData.dropped`)."""
    from tqdm.auto import tqdm

    info, records = read_pairs(data_dir)
    check_pair_images(records, family)
    if objectives is None:
        selected = info.objectives
    else:
        selected = _check_objectives(list(objectives), "objectives")
        check_known_objectives(selected, info.objectives, info.root)
    kept = [r for r in records if any(o in r.labels for o in selected)]
    if not kept:
        raise PreferenceDataError(f"{info.root}: no pair has a label on any of {', '.join(selected)}")

    cache: dict[Path, tuple[torch.Tensor, VideoShape, tuple[torch.Tensor, torch.Tensor] | None]] = {}

    def load(record: PairRecord, path: Path, field_name: str):
        if path not in cache:
            where = f"{PAIRS_FILE} line {record.line}: {field_name}"
            latents, shape = load_latents(family, path, record.shape, where)
            try:
                trajectory = read_trajectory(path, latents.shape) if path.suffix == LATENT_SUFFIX else None
            except PreferenceDataError as exc:
                raise PreferenceDataError(f"{where}: {exc}") from None
            cache[path] = latents, shape, trajectory
        return cache[path]

    latents_a, latents_b, shapes, trajectories_a, trajectories_b, trajectory_t = [], [], [], [], [], []
    bar = tqdm(kept, desc="loading pairs", unit="pair", disable=not progress)
    for record in bar:
        a, shape_a, states_a = load(record, record.a, "a")
        b, shape_b, states_b = load(record, record.b, "b")
        if shape_a != shape_b or a.shape != b.shape:
            raise _pair_shape_error(
                record, f"a and b have different shapes: {_shape_text(shape_a)} {tuple(a.shape)} vs "
                        f"{_shape_text(shape_b)} {tuple(b.shape)}"
            )
        if (states_a is None) != (states_b is None) or (
                states_a is not None and not torch.equal(states_a[1], states_b[1])):
            raise _pair_shape_error(record, "a and b must record trajectory states at the same noise levels "
                                            "(or neither any)")
        latents_a.append(a)
        latents_b.append(b)
        shapes.append(shape_a)
        trajectories_a.append(None if states_a is None else states_a[0])
        trajectories_b.append(None if states_b is None else states_b[0])
        trajectory_t.append(None if states_a is None else states_a[1])
    labels = torch.tensor(
        [[LABELS[r.labels[o]] if o in r.labels else MISSING for o in selected] for r in kept], dtype=torch.long
    )
    return PreferenceData(
        objectives=selected,
        prompts=[r.prompt for r in kept],
        prompts_b=[r.prompt_b or r.prompt for r in kept],
        latents_a=latents_a,
        latents_b=latents_b,
        shapes=shapes,
        labels=labels,
        test=torch.tensor([r.split == "test" for r in kept], dtype=torch.bool),
        lines=[r.line for r in kept],
        description=info.description,
        dropped=len(records) - len(kept),
        root=info.root,
        trajectories_a=trajectories_a,
        trajectories_b=trajectories_b,
        trajectory_t=trajectory_t,
        images=[r.image for r in kept],
    )


def _shape_text(shape: VideoShape) -> str:
    return f"{shape.frames} frames of {shape.width}x{shape.height}"


# -- writing ------------------------------------------------------------------------------------


def _as_numpy(value: Any, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().float().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise PreferenceDataError(f"{where}: must be a torch.Tensor or numpy.ndarray; got {type(value).__name__}")


def _trajectory_tensors(record: Mapping[str, Any], side: str, latent_shape: tuple[int, ...],
                        where: str) -> dict[str, torch.Tensor]:
    """The checked ``trajectory`` / ``trajectory_t`` tensors of one side of a record."""
    if record.get(f"trajectory_{side}") is None:
        raise PreferenceDataError(f"{where}: trajectory_t is given but trajectory_{side} is missing")
    states = np.asarray(_as_numpy(record[f"trajectory_{side}"], f"{where}: trajectory_{side}"), dtype=np.float32)
    levels = record["trajectory_t"]
    levels = np.asarray(levels if isinstance(levels, (list, tuple)) else _as_numpy(levels, f"{where}: trajectory_t"),
                        dtype=np.float32)
    if levels.ndim != 1 or states.shape != (len(levels), *latent_shape):
        raise PreferenceDataError(f"{where}: trajectory_{side} must be [S, *latents] with trajectory_t [S]; "
                                  f"got {states.shape} and {levels.shape}")
    if not ((levels > 0) & (levels < 1)).all():
        raise PreferenceDataError(f"{where}: trajectory_t must be noise levels in (0, 1)")
    return {TRAJECTORY_KEY: torch.from_numpy(np.ascontiguousarray(states)),
            TRAJECTORY_T_KEY: torch.from_numpy(levels)}


def _written_image(out: Path, value: Any, written: dict[Any, tuple[Any, str]], where: str) -> str:
    """The data set's file of a record's image (a PIL image or an image file's path): written as
    ``images/NNNNNN.png`` the first time that image object or file is given."""
    from PIL import Image

    if isinstance(value, (str, Path)):
        key = str(Path(value).resolve())
    elif isinstance(value, Image.Image):
        key = id(value)
    else:
        raise PreferenceDataError(f"{where}: must be a PIL image or the path of an image file; got "
                                  f"{type(value).__name__}")
    if key not in written:
        try:
            image = read_image(value) if isinstance(value, (str, Path)) else value.convert("RGB")
        except ValueError as exc:
            raise PreferenceDataError(f"{where}: {exc}") from None
        name = f"{IMAGES_FOLDER}/{len(written):06d}.png"
        (out / IMAGES_FOLDER).mkdir(exist_ok=True)
        image.save(out / name, format="PNG")
        written[key] = (value, name)
    return written[key][1]


def write_pairs(
    out_dir: str | Path,
    objectives: Sequence[str],
    records: Iterable[dict[str, Any]],
    kind: Literal["latents", "clips"] = "latents",
    *,
    description: str = "",
    tie_margin: dict[str, Any] | None = None,
) -> Path:
    """Write a preference data set to ``out_dir`` (created; an existing ``pairs.jsonl`` is replaced).

    Each record: ``prompt`` (str), optionally ``prompt_b`` (str: B is scored under it), ``a`` and ``b`` (torch.Tensor or numpy array of one shape),
    optionally ``trajectory_a``, ``trajectory_b`` ([S, *latents]: the sampler states of each clip) and
    ``trajectory_t`` ([S] noise levels; latents only),
    ``labels`` ({objective: "A" | "B" | "tie"}; leave an objective out, or give None, for no label),
    optionally ``split`` ("train" | "test" | None for the hash split) and ``shape`` (a VideoShape or
    {"frames", "height", "width"}; recorded for latents, needed to load LTX latents), and optionally
    ``image`` (image-to-video: the first frame both clips were conditioned on, a PIL image or the path of
    an image file; written as ``images/NNNNNN.png``, each image object or file once).

    ``kind="latents"``: a and b are latents in the pipeline's layout without a batch dimension,
    written as ``latents/NNNNNN_{a,b}.safetensors``. ``kind="clips"``: float [F, H, W, 3] in [0, 1],
    written as ``clips/NNNNNN_{a,b}.npy`` (float32). A clip passed again as the same object (a pool's
    sample in several pairs) is written once and referenced again. Returns ``out_dir``.
    """
    if kind not in ("latents", "clips"):
        raise ValueError(f"kind must be 'latents' or 'clips'; got {kind!r}")
    objectives = _check_objectives(list(objectives), "objectives")
    out = Path(out_dir)
    folder = out / kind
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out / (PAIRS_FILE + ".tmp")
    count = 0
    written: dict[int, tuple[Any, str]] = {}  # id(object) -> (the object, kept alive; its file)
    images: dict[Any, tuple[Any, str]] = {}  # id(PIL image) or resolved path -> (the value, kept alive; its file)
    with tmp.open("w") as lines:
        for i, record in enumerate(records):
            where = f"record {i}"
            missing = [key for key in ("prompt", "a", "b", "labels") if key not in record]
            if missing:
                raise PreferenceDataError(f"{where}: missing {', '.join(missing)}")
            if not isinstance(record["prompt"], str) or not record["prompt"].strip():
                raise PreferenceDataError(f"{where}: prompt must be a non-empty string")
            labels = {}
            for objective, label in dict(record["labels"]).items():
                if objective not in objectives:
                    raise PreferenceDataError(
                        f"{where}: labels: unknown objective {objective!r} (objectives: {', '.join(objectives)})"
                    )
                if label is None:
                    continue
                if label not in LABELS:
                    raise PreferenceDataError(f"{where}: labels.{objective} must be \"A\", \"B\" or \"tie\"; got {label!r}")
                labels[objective] = label
            split = record.get("split")
            if split is not None and split not in SPLITS:
                raise PreferenceDataError(f"{where}: split must be \"train\", \"test\" or None; got {split!r}")
            a, b = _as_numpy(record["a"], f"{where}: a"), _as_numpy(record["b"], f"{where}: b")
            if a.shape != b.shape:
                raise PreferenceDataError(f"{where}: a and b have different shapes: {a.shape} vs {b.shape}")
            row: dict[str, Any] = {"prompt": record["prompt"]}
            if record.get("prompt_b") is not None:
                if not isinstance(record["prompt_b"], str) or not record["prompt_b"].strip():
                    raise PreferenceDataError(f"{where}: prompt_b must be a non-empty string or None")
                row["prompt_b"] = record["prompt_b"]
            trajectory_t = record.get("trajectory_t")
            if trajectory_t is not None and kind != "latents":
                raise PreferenceDataError(f"{where}: trajectory states go with kind=\"latents\" only")
            for side, array in (("a", a), ("b", b)):
                if id(record[side]) in written:
                    row[side] = written[id(record[side])][1]
                    continue
                name = f"{kind}/{i:06d}_{side}"
                if kind == "clips":
                    if array.ndim != 4 or array.shape[-1] != 3:
                        raise PreferenceDataError(f"{where}: {side}: a clip must be [F, H, W, 3]; got {array.shape}")
                    array = np.asarray(array, dtype=np.float32)
                    if not (np.isfinite(array).all() and array.min() >= 0.0 and array.max() <= 1.0):
                        raise PreferenceDataError(f"{where}: {side}: clip values must be finite and in [0, 1]")
                    name += ".npy"
                    np.save(out / name, array)
                else:
                    from safetensors.torch import save_file

                    name += LATENT_SUFFIX
                    tensors = {LATENT_KEY: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))}
                    if trajectory_t is not None:
                        tensors.update(_trajectory_tensors(record, side, array.shape, where))
                    save_file(tensors, str(out / name))
                written[id(record[side])] = (record[side], name)
                row[side] = name
            if record.get("image") is not None:
                row["image"] = _written_image(out, record["image"], images, f"{where}: image")
            row["labels"] = labels
            if split is not None:
                row["split"] = split
            write_record_line(lines, row, record, where)
            count += 1
    refuse_empty(tmp, count, "write_pairs")
    config: dict[str, Any] = {"objectives": list(objectives), "description": description}
    if tie_margin is not None:
        config["tie_margin"] = tie_margin
    (out / DATASET_FILE).write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(out / PAIRS_FILE)
    return out
