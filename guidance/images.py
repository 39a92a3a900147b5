"""The first frame of an image-to-video sample from a file, fitted to the video's size.

One rule for every path an image takes into a model: the server fits an upload with it
(``server.input_reference``), and reward training and distillation fit the images of their pairs and
prompts with it, so that a reward is trained on the conditioning a served job gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: How an image is resized to the video's size (Pillow's filter; diffusers' ``VaeImageProcessor`` default).
RESAMPLE = "LANCZOS"
#: The image formats read (Pillow's names): those the server accepts as an upload.
FORMATS = ("PNG", "JPEG", "WEBP")


def fit_image(image: Any, width: int, height: int) -> Any:
    """A PIL image as the sampler takes it: RGB, resized to ``width`` x ``height`` when its size differs."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), getattr(Image.Resampling, RESAMPLE))
    return image


def read_image(path: str | Path) -> Any:
    """The decoded RGB image of a PNG, JPEG or WebP file of one frame; ``ValueError`` saying why not."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path, formats=FORMATS) as image:
            if getattr(image, "n_frames", 1) != 1:
                raise ValueError(f"{path}: has {image.n_frames} frames; a first frame is one image")
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a PNG, JPEG or WebP image") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: the image cannot be decoded: {exc}") from None
