"""The client's models against the live server's ``/openapi.json``, so that the two cannot drift apart.

Requests: every field the client can send exists in the server's ``VideoCreateRequest`` with a type
the server accepts, every server field can be set through ``create(...)``, and what the server
requires the client sends. Responses: every field of every server response object exists in the
client's model with a type that parses what the server sends, and the client requires nothing the
server may leave out. Routes: every route the client calls exists, with the response model and query
parameters the client expects.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from nrg_client import AsyncClient, Client
from nrg_client._base import ROUTES, VARIANT_SUFFIX
from nrg_client.types import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    ModelInfo,
    ModelList,
    Video,
    VideoCreateParams,
    VideoDeleted,
    VideoList,
)

#: create() keyword arguments that map to the server's nested reward_guidance object.
GUIDANCE_KWARGS = {"reward_weights": "weights", "strength": "strength", "window": "window", "mode": "mode",
                   "particles": "particles", "judge": "judge"}
#: (client model, server schema name, route whose 200 answer it parses)
RESPONSE_MODELS = [
    (Video, "VideoObject", ("get", "/v1/videos/{video_id}")),
    (Video, "VideoObject", ("post", "/v1/videos")),
    (VideoList, "VideoList", ("get", "/v1/videos")),
    (VideoDeleted, "VideoDeleted", ("delete", "/v1/videos/{video_id}")),
    (ModelList, "ModelList", ("get", "/v1/models")),
    (ModelInfo, "ModelCard", None),
]


# -- a small JSON-schema comparator ---------------------------------------------------------------


class Schemas:
    """One side's named schemas (OpenAPI ``components.schemas`` or pydantic ``$defs``)."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named

    @classmethod
    def of_model(cls, model: type[BaseModel]) -> tuple[Schemas, dict[str, Any]]:
        schema = model.model_json_schema(ref_template="#/$defs/{model}")
        return cls(schema.pop("$defs", {})), schema

    def get(self, ref: str) -> dict[str, Any]:
        return self.named[ref.rsplit("/", 1)[-1]]


def types_of(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits (a $ref is an object)."""
    if not schema:
        return {"any"}
    if "$ref" in schema:
        return {"object"}
    out: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            out |= types_of(sub)
    if "type" in schema:
        kinds = schema["type"]
        out |= set(kinds if isinstance(kinds, list) else [kinds])
    for value in list(schema.get("enum", ())) + ([schema["const"]] if "const" in schema else []):
        out.add({str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}[type(value)])
    return out or {"any"}


def accepts(receiver: set[str], kind: str) -> bool:
    return "any" in receiver or kind in receiver or (kind == "integer" and "number" in receiver)


def refs_of(schema: dict[str, Any]) -> list[str]:
    """$refs of a property: direct, inside anyOf/oneOf, or as array items."""
    if "$ref" in schema:
        return [schema["$ref"]]
    out = []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            out += refs_of(sub)
    if isinstance(schema.get("items"), dict):
        out += refs_of(schema["items"])
    return out


def compare(sender: dict[str, Any], sender_defs: Schemas, receiver: dict[str, Any], receiver_defs: Schemas,
            where: str, *, request: bool) -> list[str]:
    """Problems of sending objects of schema ``sender`` to a party that validates with ``receiver``.

    ``request``: the sender is the client, which leaves out None (so nulls are not checked) and must be
    able to set every receiver field; otherwise the sender is the server, which may send null where its
    schema allows it and may leave out what it does not require."""
    problems = []
    s_props, r_props = sender.get("properties", {}), receiver.get("properties", {})
    for name, s_field in s_props.items():
        if name not in r_props:
            problems.append(f"{where}.{name}: sent but unknown to the receiver")
            continue
        r_field = r_props[name]
        sent = types_of(s_field) - ({"null"} if request else set())
        bad = sorted(t for t in sent if not accepts(types_of(r_field), t))
        if bad:
            problems.append(f"{where}.{name}: sends {bad}, receiver accepts {sorted(types_of(r_field))}")
        s_refs, r_refs = refs_of(s_field), refs_of(r_field)
        if len(s_refs) == 1 and len(r_refs) == 1:
            problems += compare(sender_defs.get(s_refs[0]), sender_defs, receiver_defs.get(r_refs[0]), receiver_defs,
                                f"{where}.{name}", request=request)
        elif bool(s_refs) != bool(r_refs):
            problems.append(f"{where}.{name}: an object on one side only")
    if request:
        problems += [f"{where}.{n}: the server has it, the client cannot send it" for n in r_props if n not in s_props]
        problems += [f"{where}.{n}: required by the server, optional in the client"
                     for n in receiver.get("required", ()) if n not in sender.get("required", ())]
    else:
        problems += [f"{where}.{n}: required by the client, optional on the server"
                     for n in receiver.get("required", ()) if n not in sender.get("required", ())]
    return problems


def request_problems(openapi: dict[str, Any]) -> list[str]:
    server = Schemas(openapi["components"]["schemas"])
    client_defs, client = Schemas.of_model(VideoCreateParams)
    return compare(client, client_defs, server.named["VideoCreateRequest"], server, "VideoCreateRequest", request=True)


def response_problems(openapi: dict[str, Any]) -> list[str]:
    server = Schemas(openapi["components"]["schemas"])
    problems = []
    for model, name, route in RESPONSE_MODELS:
        client_defs, client = Schemas.of_model(model)
        problems += compare(server.named[name], server, client, client_defs, name, request=False)
        if route is not None:
            method, path = route
            operation = openapi["paths"].get(path, {}).get(method)
            if operation is None:
                problems.append(f"{method.upper()} {path}: no such route")
                continue
            answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
            if f"#/components/schemas/{name}" not in refs_of(answer):
                problems.append(f"{method.upper()} {path}: answers {answer}, the client parses {name}")
    return problems


# -- the tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(server_url) -> dict[str, Any]:
    return httpx.get(f"{server_url}/openapi.json", timeout=30).raise_for_status().json()


def test_request_fields_match_the_server(openapi):
    assert request_problems(openapi) == []


def test_create_signature_covers_every_server_field(openapi):
    server = openapi["components"]["schemas"]
    fields = set(server["VideoCreateRequest"]["properties"]) - {"reward_guidance"}
    guidance_ref = refs_of(server["VideoCreateRequest"]["properties"]["reward_guidance"])[0].rsplit("/", 1)[-1]
    guidance_fields = set(server[guidance_ref]["properties"])
    for cls in (Client, AsyncClient):
        params = set(inspect.signature(cls.create).parameters) - {"self", "extra_body"}
        assert params == fields | set(GUIDANCE_KWARGS), cls
    assert set(GUIDANCE_KWARGS.values()) == guidance_fields
    assert inspect.signature(Client.create).parameters.keys() == inspect.signature(AsyncClient.create).parameters.keys()


def test_response_models_parse_what_the_server_sends(openapi):
    assert response_problems(openapi) == []
    status = openapi["components"]["schemas"]["VideoObject"]["properties"]["status"]
    assert set(status["enum"]) == set(ACTIVE_STATUSES) | set(TERMINAL_STATUSES)


def test_routes_and_query_parameters_exist(openapi):
    for method, path in ROUTES:
        assert method in openapi["paths"].get(path, {}), (method, path)
    listing = {p["name"] for p in openapi["paths"]["/v1/videos"]["get"]["parameters"]}
    assert listing == {"after", "limit", "order"}
    (variant,) = openapi["paths"]["/v1/videos/{video_id}/content"]["get"]["parameters"][1:]
    assert variant["name"] == "variant" and variant["schema"]["pattern"] == "^(video|thumbnail)$"
    assert set(VARIANT_SUFFIX) == {"video", "thumbnail"}


def test_the_contract_check_can_fail(openapi):
    """Drift on either side is caught: a new server response field, a renamed request field, a type change."""
    drifted = copy.deepcopy(openapi)
    schemas = drifted["components"]["schemas"]
    schemas["VideoObject"]["properties"]["new_metric"] = {"type": "number"}
    schemas["VideoCreateRequest"]["properties"]["steps"] = schemas["VideoCreateRequest"]["properties"].pop(
        "num_inference_steps")
    schemas["VideoCreateRequest"]["properties"]["seed"] = {"type": "string"}
    schemas["ModelCard"]["required"].append("family")  # already required: no problem
    schemas["VideoDeleted"]["required"].remove("deleted")
    schemas["RewardGuidance"]["properties"]["beta"] = {"type": "number"}  # nested, in responses
    guidance = refs_of(schemas["VideoCreateRequest"]["properties"]["reward_guidance"])[0].rsplit("/", 1)[-1]
    schemas[guidance]["properties"]["mode"] = {"type": "integer"}  # nested, in requests
    assert "VideoObject.new_metric: sent but unknown to the receiver" in response_problems(drifted)
    assert "VideoDeleted.deleted: required by the client, optional on the server" in response_problems(drifted)
    problems = request_problems(drifted)
    assert "VideoCreateRequest.num_inference_steps: sent but unknown to the receiver" in problems
    assert "VideoCreateRequest.steps: the server has it, the client cannot send it" in problems
    assert any(p.startswith("VideoCreateRequest.seed: sends ['integer']") for p in problems)
    assert "VideoObject.reward_guidance.beta: sent but unknown to the receiver" in response_problems(drifted)
    assert any(p.startswith("VideoCreateRequest.reward_guidance.mode: sends ['string']") for p in problems)
