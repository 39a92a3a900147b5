"""The POST /v1/videos body as a dict, from JSON or from form data.

The official ``openai`` SDK sends ``videos.create`` as multipart, nesting ``extra_body`` fields as
``reward_guidance[weights][vq]``; JSON bodies go through the bounded parser of ``server.json_body``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from fastapi import Request

from server.errors import APIError
from server.input_reference import UploadedImage
from server.json_body import MAX_DEPTH, JSONBodyError, parse_json_object

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
#: The one file part a form body may carry (image-to-video, ``server.input_reference``).
FILE_FIELD = "input_reference"


async def read_body(request: Request, max_body_bytes: int | None = None) -> dict[str, Any]:
    """The body as a JSON object; a malformed one is a 400 naming what is wrong. A multipart file part
    ``input_reference`` comes back as an :class:`~server.input_reference.UploadedImage` (its size is
    checked by the resolver). ``max_body_bytes``: the limit of everything but that image (the route's
    ``BodyLimit`` allows room for one)."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()  # BodyLimit stops it at its limit
    if content_type.startswith(FORM_TYPES):
        try:
            form = await request.form(max_files=1)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
            raise APIError(400, f"malformed form body: {exc}") from None
        items = []
        for key, value in form.multi_items():
            if not isinstance(value, str):
                value = await _uploaded(key, value)
            items.append((key, value))
        body = unflatten_form(items)
        image = body.get(FILE_FIELD)
        rest = len(raw) - (len(image.data) if isinstance(image, UploadedImage) else len(image or ""))
    else:
        if max_body_bytes is not None and len(raw) > max_body_bytes and b'"input_reference"' not in raw:
            raise _too_large(max_body_bytes)  # only an image earns a body more room: refused unparsed
        try:
            body = parse_json_object(raw)
        except JSONBodyError as exc:
            raise APIError(400, str(exc), param=exc.param) from None
        image = body.get(FILE_FIELD)
        rest = len(raw) - (len(image) if isinstance(image, str) else 0)
    if max_body_bytes is not None and rest > max_body_bytes:
        raise _too_large(max_body_bytes)
    return body


def _too_large(max_body_bytes: int) -> APIError:
    return APIError(413, f"request body exceeds max_body_bytes {max_body_bytes} (besides an input_reference image)",
                    code="body_too_large", headers={"Connection": "close"})


async def _uploaded(key: str, upload: Any) -> UploadedImage:
    """A file part's bytes; only ``input_reference`` may be a file."""
    if key != FILE_FIELD:
        raise APIError(400, f"{key}: file uploads are supported only as {FILE_FIELD}", param=key)
    data = await upload.read()
    return UploadedImage(data, upload.content_type, upload.filename)


def unflatten_form(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``a[b][c]=v`` / ``a[b][]=v`` form keys (as the openai SDK writes them) to nested dicts/lists."""
    out: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, UploadedImage) and key == FILE_FIELD:
            if key in out:
                raise APIError(400, f"{key}: give one image", param=key)
            out[key] = value
            continue
        if not isinstance(value, str):
            raise APIError(400, f"{key}: file uploads are not supported", param=key)
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        if len(parts) > MAX_DEPTH:
            raise APIError(400, f"{key[:100]}: form key nesting exceeds the limit of {MAX_DEPTH} levels",
                           param=parts[0])
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "[]":
                raise APIError(400, f"{key}: malformed form key", param=key)
            if not last and parts[i + 1] == "[]":
                node.setdefault(part, []).append(value)
                break
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise APIError(400, f"{key}: conflicting form keys", param=key)
                node = child
    return out
