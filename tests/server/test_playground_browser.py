"""The playground (``/``) and Swagger UI (``/docs``) driven end to end in a real browser.

Debian's chromium under Playwright, against a live server on loopback that hosts the embedded demo
model with its trained reward and the demo's held-out judges (``nrg serve``'s ``--judge`` defaults)
and requires an API key, so the page must load without one and send the key it is given. A second,
tiny model whose reward has long objective names is there for the layout of the sliders. Nothing is
mocked: the jobs run on the demo model, the videos are decoded by the browser, and every request the
pages make is recorded; one to another origin fails the test. Missing chromium or Playwright fails
too (``.ci/run`` installs chromium), it never skips.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

from guidance.families.base import VideoShape
from guidance.reward_model import init_reward_model
from server.config import DEMO_JUDGES, ServerConfig, load_models
from server.hosted_model import HostedModel
from server.schema import Limits
from tests.server.conftest import running_server
from tools.playground_screenshot import CHROMIUM, CHROMIUM_ARGS

KEY = "sk-playground"
TIMEOUT_MS = 120_000
LONG_OBJECTIVES = ["exposure", "motion_smoothness", "sharpness"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_family):
    models = load_models(ServerConfig(device="cpu"))
    family = tiny_family("wan")
    models["tiny-long"] = HostedModel("tiny-long", family, init_reward_model(family, LONG_OBJECTIVES, num_blocks=1, seed=0),
                                      None, VideoShape(height=32, width=32, frames=9), 4)
    with running_server(tmp_path_factory.mktemp("playground"), models, api_keys=(KEY,), judges=dict(DEMO_JUDGES),
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


def _enter_key(page, server) -> None:
    page.goto(server + "/")
    page.wait_for_selector("#key-status:text('this server needs a key')")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model option[value='nrg-demo']", state="attached")


#: Per canvas of the selector: how many of its pixels have any colour (R, G or B above 0).
LIT_PIXELS = """selector => [...document.querySelectorAll(selector)].map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] || d[i + 1] || d[i + 2]) lit += 1;
    return lit;
})"""


def _live_view(page) -> dict:
    """What the Live section shows: its status line, and the run whose rewards its chart draws."""
    return page.evaluate("""() => {
        const { chart, live, state } = window.playground;
        return { status: document.querySelector('#status').textContent, label: live.run.label,
                 job: live.run.jobId, ownSeries: chart.series === live.run.series, points: chart.points,
                 runPoints: live.run.series.points, compared: state.compared.map(r => r.series.points) };
    }""")


def test_without_javascript_the_page_says_what_it_needs(browser, server):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(server + "/")
    assert "needs JavaScript" in page.inner_text("#no-script")
    assert page.input_value("#prompt") == "a red circle moving right"
    assert page.get_attribute("#steps", "placeholder") == "model default"
    assert "once the models load" in page.inner_text("#weights")
    for hidden in ("#download", "#follow", "#compare-view"):
        assert page.is_hidden(hidden), hidden
    context.close()


def test_legends_and_long_objective_names(page, server):
    _enter_key(page, server)
    assert page.is_hidden("#download")  # idle: nothing to download yet
    assert page.is_hidden("#no-script")
    legend = page.inner_text("#scores-legend")
    assert "not evidence on its own" in legend and "judge_scores" in legend and "did not see" in legend
    assert "multiple of the CFG term" in page.get_attribute("#strength", "title")
    for control in ("#window-lo", "#window-hi", "#mode", "#particles", "#seed-b"):
        assert page.get_attribute(control, "title"), control
    assert "pushes it up" in page.get_attribute("#weights label", "title")

    page.select_option("#model", "tiny-long")
    page.wait_for_selector("#weights-motion_smoothness", state="attached")
    for container in ("#weights", "#weights-b"):
        boxes = page.eval_on_selector_all(f"{container} label", """labels => labels.map(label => {
            const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
            const name = label.querySelector('.objective');
            return { text: name.textContent, name: box(name), range: box(label.querySelector('input')),
                     clipped: name.scrollWidth > name.clientWidth };
        })""")
        assert [b["text"] for b in boxes] == LONG_OBJECTIVES
        for b in boxes:
            (_, nt, nr, nb), (rl, rt, rr, rb) = b["name"], b["range"]
            assert nr <= rl or nb <= rt or rb <= nt, f"{b['text']} overlaps its slider: {b}"
            assert not b["clipped"], b
            assert rr - rl >= 80, f"the slider of {b['text']} is squeezed: {b}"


def test_generate_cancel_and_compare(page, server, tmp_path):
    _enter_key(page, server)
    assert [o for o in page.eval_on_selector_all("#weights input[type=range]", "els => els.map(e => e.name)")] == [
        "vq", "mq", "ta"]

    # One guided job compared with its unguided twin: move the ta slider with the keyboard, submit, watch
    # steps and the chart.
    page.fill("#prompt", "a red circle moving right")
    page.fill("#seed", "3")
    page.fill("#steps", "6")
    page.focus("#weights-ta")
    for _ in range(16):
        page.keyboard.press("ArrowRight")
    assert page.input_value("#weights-ta") == "0.8"
    assert "reward hacking" in page.get_attribute("label:has(#compare-unguided)", "title")
    page.check("#compare-unguided")
    page.click("#submit")
    page.wait_for_selector("#status:text-matches('step [0-9]+/6')")
    _wait_js(page, "window.playground.chart.points > 0")
    page.wait_for_selector("#status:text('completed')")
    _wait_js(page, _video_playable("#player"))
    result = page.inner_text("#result")
    assert "reward ta" in result and "batch size" in result and "inference time s" in result
    assert "ta=0.8" in result and "held-out judge truth" in result
    assert page.get_attribute("#download", "download").endswith(".mp4")
    assert page.is_visible("#download")
    # The twin's figures beside the job's, and the verdict the job reports, flagged when it flags.
    job = httpx.get(f"{server}/v1/videos/{_live_view(page)['job']}", headers={"authorization": f"Bearer {KEY}"}).json()
    assert job["compare_unguided"] and job["unguided"]["changes"], job  # truth scores vq, mq and ta too
    shown = page.inner_text("#result dt:text-is('optimised reward ta (what guidance pushed up)') + dd")
    assert shown.startswith(f"{job['rewards']['ta']:.4f}") and shown.endswith(
        f"(unguided twin {job['unguided']['rewards']['ta']:.4f})"), shown
    assert "(unguided twin " in page.inner_text("#result dt:text-is('held-out judge truth: ta') + dd")
    if job["reward_hacking"]:
        flagged = job["reward_hacking"][0]
        line = f"guidance raised {flagged['objective']} while judge {flagged['judge']} says it fell"
        assert page.is_visible("#hacking") and line in page.inner_text("#hacking") and line in result
    else:
        assert page.is_hidden("#hacking") and "reward hacking\nnone: no held-out judge" in result
    # A flagged verdict, whatever this run's: the same job shown as if truth had said ta fell.
    change = next(c for c in job["unguided"]["changes"] if (c["objective"], c["judge"]) == ("ta", "truth"))
    flagged = {**change, "reward_change": 0.5, "judge_change": -0.25, "hacked": True}
    page.evaluate("""video => { const { live } = window.playground;
        live.follow({ status: 'replayed', progress: 100, series: live.run.series, video }); }""",
                  {**job, "reward_hacking": [flagged]})
    page.wait_for_selector("#hacking:not([hidden])")
    line = "guidance raised ta while judge truth says it fell (reward +0.5, judge -0.25 vs the unguided twin)"
    assert line in page.inner_text("#hacking")
    assert page.inner_text("#result dd.warning") == line
    page.uncheck("#compare-unguided")

    # A long second job, cancelled while it runs.
    page.fill("#steps", "300")
    page.click("#submit")
    page.wait_for_selector("#status:text-matches('step [0-9]+/300')")
    page.click("#cancel")
    page.wait_for_selector("#status:text('cancelled')")

    # A vs B: the guided setting against the unguided one on another seed, played in sync.
    page.fill("#steps", "6")
    page.fill("#seed-b", "4")
    page.click("#compare")
    _wait_js(page, _video_playable("#compare-a video") + " && " + _video_playable("#compare-b video"))
    assert "A: ta=0.8 (seed 3)" in page.inner_text("#compare-a figcaption")
    assert "B: unguided (seed 4)" in page.inner_text("#compare-b figcaption")
    assert "reward ta" in page.inner_text("#compare-a dl")
    assert "guidance\nunguided" in page.inner_text("#compare-b dl")
    _wait_js(page, "!document.querySelector('#compare-a video').paused && "
                   "!document.querySelector('#compare-b video').paused")
    drift = page.evaluate("() => Math.abs(document.querySelector('#compare-a video').currentTime - "
                          "document.querySelector('#compare-b video').currentTime)")
    assert drift < 0.25

    # The live view follows A, then B when picked: status line, chart and result always of one run.
    page.wait_for_selector("#compare-a .status:text('completed')")
    page.wait_for_selector("#compare-b .status:text('completed')")
    shown = _live_view(page)
    assert shown["label"] == "A" and shown["status"].startswith(f"A {shown['job']}: ") and shown["ownSeries"]
    assert shown["points"] == shown["runPoints"] == shown["compared"][0] > 0
    page.check("#follow input[value=B]")
    page.wait_for_selector("#status:text-matches('^B ')")
    shown = _live_view(page)
    assert shown["label"] == "B" and shown["status"] == f"B {shown['job']}: completed" and shown["ownSeries"]
    assert shown["points"] == shown["compared"][1]
    assert page.inner_text("#compare-b .status") == shown["status"]
    page.wait_for_selector("#result dt:text-is('seed') + dd:text-is('4')")  # and its result: B's, not A's
    assert "guidance\nunguided" in page.inner_text("#result")

    # The effect: frame strips of both videos, the difference of the middle frame, the measured changes.
    page.wait_for_selector("#effect:not([hidden]) #difference-stats dd")
    assert page.eval_on_selector_all("#strips button", "els => els.map(e => e.textContent)") == [
        "frame 0", "frame 4", "frame 8", "frame 12", "frame 16"]
    assert all(lit > 0 for lit in page.evaluate(LIT_PIXELS, "#strips canvas"))
    assert len(page.evaluate(LIT_PIXELS, "#strips canvas")) == 10
    [heat] = page.evaluate(LIT_PIXELS, "#difference-map")
    assert heat > 0, "two seeds, yet no pixel differs"
    stats = page.inner_text("#difference-stats")
    mean, peak = (float(re.search(rf"{what} \|A − B\|\s+([0-9.]+) levels", stats).group(1)) for what in ("mean", "max"))
    assert 0 < mean <= peak <= 255, stats
    assert "frame\n8" in stats
    page.click("#strips button:text('frame 0')")
    page.wait_for_selector("#difference-stats dd:text-is('0')")
    changes = page.inner_text("#metric-changes")
    assert "optimised reward ta (what guidance pushed up)" in changes and "held-out judge truth: ta" in changes
    assert re.search(r"held-out judge classic: sharpness\s+-?[0-9.]+\s+-?[0-9.]+\s+[+-][0-9.]+", changes), changes

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
