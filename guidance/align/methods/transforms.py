"""SUDO's losers, made on the fly from winners (no labels), as video-native transformations.

They act on clean latents in the family's layout ``[B, C, F, H, W]`` (Wan, HunyuanVideo, CogVideoX
after their adapters' layout); packed token layouts (LTX-Video) have no frame axis and are refused.
Working in latent space costs no VAE pass. Per objective:

* motion (MQ): ``reverse`` (frames in reverse order) and ``shuffle`` (a random permutation of the
  frames other than the identity): the same content, wrong motion;
* visual quality (VQ): ``blur`` (a separable box blur of radius k over H and W, circular padding,
  so every frame's mean is kept) and ``noise`` (Gaussian noise of std sigma added);
* alignment (TA): ``permute``: another prompt's clip (a random derangement of the batch: no clip
  is its own loser when the batch has more than one prompt), SUDO's own construction.
"""

from __future__ import annotations

import torch

TRANSFORMS: dict[str, str] = {
    "permute": "ta", "reverse": "mq", "shuffle": "mq", "blur": "vq", "noise": "vq",
}


def parse_transforms(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in TRANSFORMS]
    if not names or unknown:
        raise ValueError(f"--sudo-transforms must name some of {', '.join(TRANSFORMS)}; got {text!r}")
    return names


def _check(x: torch.Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"SUDO {name} needs latents [B, C, F, H, W]; got {tuple(x.shape)} (packed layouts such as "
                         "LTX-Video's have no frame axis)")


def reverse_frames(x: torch.Tensor) -> torch.Tensor:
    _check(x, "reverse")
    return x.flip(2)


def shuffle_frames(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each clip's frames in a random order other than the original (when it has > 1 frame)."""
    _check(x, "shuffle")
    frames = x.shape[2]
    out = []
    for clip in x:
        order = torch.arange(frames)
        if frames > 1:
            while torch.equal(order, torch.arange(frames)):
                order = torch.randperm(frames, generator=generator)
        out.append(clip[:, order.to(x.device)])
    return torch.stack(out)


def blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable box blur of width 2 radius + 1 over H and W with circular padding (keeps means)."""
    _check(x, "blur")
    if radius < 1:
        raise ValueError(f"--sudo-blur must be >= 1; got {radius}")
    out = x.float()
    width = 2 * radius + 1
    for dim in (3, 4):
        out = sum(torch.roll(out, shift, dims=dim) for shift in range(-radius, radius + 1)) / width
    return out.to(x.dtype)


def add_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    if not std > 0:
        raise ValueError(f"--sudo-noise must be > 0; got {std}")
    return x + std * torch.randn(x.shape, generator=generator).to(x)


def derangement(count: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation with no fixed point (the identity for count 1)."""
    if count < 2:
        return torch.arange(count)
    while True:
        perm = torch.randperm(count, generator=generator)
        if not bool((perm == torch.arange(count)).any()):
            return perm


def make_losers(x: torch.Tensor, names: tuple[str, ...], generator: torch.Generator, *, blur_radius: int = 1,
                noise_std: float = 0.5) -> torch.Tensor:
    """One loser per winner: row i uses transformation ``names[i % len(names)]`` (drawn per row
    from ``generator``'s order, so a step's losers depend only on its seed)."""
    choice = torch.randint(len(names), (x.shape[0],), generator=generator).tolist()
    perm = derangement(x.shape[0], generator)
    losers = []
    for i, k in enumerate(choice):
        name, row = names[k], x[i:i + 1]
        if name == "permute":
            losers.append(x[int(perm[i]):int(perm[i]) + 1])
        elif name == "reverse":
            losers.append(reverse_frames(row))
        elif name == "shuffle":
            losers.append(shuffle_frames(row, generator))
        elif name == "blur":
            losers.append(blur(row, blur_radius))
        else:
            losers.append(add_noise(row, noise_std, generator))
    return torch.cat(losers)
