"""``--log-format json``: one JSON object per line, uvicorn's lines included, extra fields as keys."""

from __future__ import annotations

import io
import json
import logging

import pytest

from server.log_format import configure


@pytest.fixture
def json_log():
    stream = io.StringIO()
    handler = configure("json", stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_job_and_access_lines_are_json_objects(json_log):
    logging.getLogger("nrg.jobs").info("job %s started in a batch of %d", "video_1", 2,
                                       extra={"job": "video_1", "event": "started", "batch_size": 2})
    # uvicorn's access record, as uvicorn logs it, through the redacting filter it keeps.
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                                             "/v1/models?api_key=sk-1", "1.1", 200)
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    job, access = lines[-2], lines[-1]
    assert job["message"] == "job video_1 started in a batch of 2"
    assert (job["level"], job["logger"], job["job"], job["event"], job["batch_size"]) == (
        "info", "nrg.jobs", "video_1", "started", 2)
    assert job["time"].endswith("+00:00")
    assert access["logger"] == "uvicorn.access" and "GET /v1/models" in access["message"]


def test_an_unknown_format_names_the_flag():
    with pytest.raises(ValueError, match="--log-format must be one of text, json; got 'xml'"):
        configure("xml")
