"""The playground (``/``) and Swagger UI (``/docs``) driven end to end in a real browser.

Debian's chromium under Playwright, against a live server on loopback that hosts the embedded demo
model with its trained reward and requires an API key, so the page must load without one and send
the key it is given. Nothing is mocked: the jobs run on the demo model, the videos are decoded by
the browser, and every request the pages make is recorded; one to another origin fails the test.
Missing chromium or Playwright fails too (``.ci/run`` installs chromium), it never skips.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from server.config import ServerConfig, load_models
from tools.playground_screenshot import CHROMIUM, CHROMIUM_ARGS
from server.schema import Limits
from tests.server.conftest import running_server

KEY = "sk-playground"
TIMEOUT_MS = 120_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = load_models(ServerConfig(device="cpu"))
    with running_server(tmp_path_factory.mktemp("playground"), models, api_keys=(KEY,),
                        limits=Limits(max_steps=400)) as (url, _app):
        yield url


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -c constraints.txt -e '.[test]'")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """A fresh page; ``page.requests`` lists every URL it asked for."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    origin = urlsplit(server)
    foreign = [u for u in page.requests
               if not u.startswith(("blob:", "data:")) and urlsplit(u)[:2] != origin[:2]]
    assert not foreign, f"the page requested something outside the server: {foreign}"


def test_pages_need_no_key_but_the_api_does(server):
    with httpx.Client(base_url=server) as client:
        for path in ("/", "/docs", "/static/playground.js", "/static/swagger/swagger-ui-bundle.js"):
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert client.get("/v1/models").status_code == 401
        assert "content-security-policy" not in client.get("/v1/models").headers
        assert client.get("/static/%2e%2e/app.py").status_code == 404  # no way out of the static folder


def _wait_js(page, expression: str) -> None:
    # As a function: a bare expression string would be eval'ed, which the page's CSP refuses.
    page.wait_for_function(f"() => {expression}", timeout=TIMEOUT_MS)


def _video_playable(selector: str) -> str:
    return f"document.querySelector({selector!r}).readyState >= 2"


def test_generate_cancel_and_compare(page, server, tmp_path):
    page.goto(server + "/")
    page.wait_for_selector("#key-status:text('this server needs a key')")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model option[value='nrg-demo']", state="attached")
    assert [o for o in page.eval_on_selector_all("#weights input[type=range]", "els => els.map(e => e.name)")] == [
        "vq", "mq", "ta"]

    # One guided job: move the ta slider with the keyboard, submit, watch steps and the chart.
    page.fill("#prompt", "a red circle moving right")
    page.fill("#seed", "3")
    page.fill("#steps", "6")
    page.focus("#weights-ta")
    for _ in range(16):
        page.keyboard.press("ArrowRight")
    assert page.input_value("#weights-ta") == "0.8"
    page.click("#submit")
    page.wait_for_selector("#status:text-matches('step [0-9]+/6')")
    _wait_js(page, "window.playground.chart.points > 0")
    page.wait_for_selector("#status:text('completed')")
    _wait_js(page, _video_playable("#player"))
    result = page.inner_text("#result")
    assert "reward ta" in result and "batch size" in result and "inference time s" in result
    assert "ta=0.8" in result
    assert page.get_attribute("#download", "download").endswith(".mp4")

    # A long second job, cancelled while it runs.
    page.fill("#steps", "300")
    page.click("#submit")
    page.wait_for_selector("#status:text-matches('step [0-9]+/300')")
    page.click("#cancel")
    page.wait_for_selector("#status:text('cancelled')")

    # A vs B: the guided setting against the unguided one, same prompt and seed, played in sync.
    page.fill("#steps", "6")
    page.click("#compare")
    _wait_js(page, _video_playable("#compare-a video") + " && " + _video_playable("#compare-b video"))
    assert "A: ta=0.8 (seed 3)" in page.inner_text("#compare-a figcaption")
    assert "B: unguided (seed 3)" in page.inner_text("#compare-b figcaption")
    assert "reward ta" in page.inner_text("#compare-a dl")
    assert "guidance\nunguided" in page.inner_text("#compare-b dl")
    _wait_js(page, "!document.querySelector('#compare-a video').paused && "
                   "!document.querySelector('#compare-b video').paused")
    drift = page.evaluate("() => Math.abs(document.querySelector('#compare-a video').currentTime - "
                          "document.querySelector('#compare-b video').currentTime)")
    assert drift < 0.25

    # The gallery lists the four jobs, thumbnails decoded; a click replays one in the player.
    page.click("#refresh")
    _wait_js(page, "document.querySelectorAll('#gallery .card').length >= 4 && "
                   "[...document.querySelectorAll('#gallery img')].filter(i => i.naturalWidth > 0).length >= 3")
    page.click("#gallery .card:last-child")
    page.wait_for_selector("#result:has-text('ta=0.8')")
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def test_swagger_ui_renders_offline(page, server):
    page.goto(server + "/")
    page.evaluate(f"() => sessionStorage.setItem('nrg-api-key', {KEY!r})")  # as the key field stores it
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path[data-path='/v1/videos']", state="attached")
    assert "nrg-serve" in page.inner_text(".swagger-ui .info .title")
    assert any(u.endswith("/static/swagger/swagger-ui-bundle.js") for u in page.requests)
