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
from server.json_body import MAX_DEPTH, JSONBodyError, parse_json_object

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def read_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object; a malformed one is a 400 naming what is wrong."""
    content_type = request.headers.get("content-type", "")
    raw = await request.body()  # BodyLimit stops it at max_body_bytes
    if content_type.startswith(FORM_TYPES):
        try:
            form = await request.form(max_files=0)
        except Exception as exc:  # noqa: BLE001 - any parser failure is the client's malformed body
            raise APIError(400, f"malformed form body: {exc}") from None
        return unflatten_form(form.multi_items())
    try:
        return parse_json_object(raw)
    except JSONBodyError as exc:
        raise APIError(400, str(exc), param=exc.param) from None


def unflatten_form(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``a[b][c]=v`` / ``a[b][]=v`` form keys (as the openai SDK writes them) to nested dicts/lists."""
    out: dict[str, Any] = {}
    for key, value in items:
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
