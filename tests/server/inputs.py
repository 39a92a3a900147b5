"""Image and video inputs for the API tests: a PNG, data: URLs, a multipart post of ``input_reference``,
and the error a refused request names."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from PIL import Image


def png(seed: int, width: int = 32, height: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def post_reference(client: httpx.Client, fields: dict, filename: str, data: bytes, content_type: str) -> httpx.Response:
    """A job whose ``input_reference`` is a multipart file part, as the OpenAI SDK sends it."""
    form = {k: str(v) for k, v in fields.items()}
    return client.post("/v1/videos", data=form, files={"input_reference": (filename, data, content_type)})


def refusal(response: httpx.Response, status: int = 400) -> dict:
    """The ``error`` object of a refused request, after checking its status."""
    assert response.status_code == status, response.text
    return response.json()["error"]
