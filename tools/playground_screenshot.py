"""The playground's screenshot in docs/img: a steered and an unguided video side by side.

::

    python -m tools.playground_screenshot --out docs/img/playground.png

Starts nrg-serve in this process on the embedded demo model (its trained reward) with the demo's
held-out judges (as ``nrg serve`` loads them without ``--judge``), opens the
playground in Debian's chromium (Playwright, ``pip install -e '.[test]'``; ``apt-get install chromium``),
sets objective weights A, leaves B at 0 (unguided), presses "Compare A vs B" and, once both videos
play and the frame strips and the difference view are drawn, pauses them (and the live view's copy
of A) on the same frame and saves the page. Nothing is faked: the numbers on the picture are the jobs' own.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from guidance.demo import DEFAULT_MODEL_DIR
from server.config import DEMO_JUDGES
from tools.in_process import serve_in_process

CHROMIUM = Path("/usr/bin/chromium")
#: Headless and quiet: no GPU, no sandbox (containers, root), no calls home of the browser's own.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")


def _press_to(page, selector: str, value: float) -> None:
    """Move a -1..1 slider (step 0.05) to ``value`` with the keyboard, as a user would."""
    page.focus(selector)
    page.keyboard.press("Home")  # -1
    for _ in range(round((value + 1) / 0.05)):
        page.keyboard.press("ArrowRight")


def capture(out: Path, weights: dict[str, float], prompt: str, seed: int, steps: int, frame_s: float) -> Path:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="nrg-shot-") as tmp, \
            serve_in_process(DEFAULT_MODEL_DIR, max_batch=2, batch_wait_ms=200, max_queue=8, device="cpu",
                             dtype="float32", data_dir=Path(tmp) / "data", judges=DEMO_JUDGES) as (url, _name), \
            sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": 1280, "height": 1200}, device_scale_factor=1)
        page.set_default_timeout(300_000)
        page.goto(url + "/")
        page.wait_for_selector("#weights input[type=range]", state="attached")
        page.fill("#prompt", prompt)
        page.fill("#seed", str(seed))
        page.fill("#steps", str(steps))
        for name, value in weights.items():
            _press_to(page, f"#weights-{name}", value)
        page.click("#compare")
        page.wait_for_function("() => [...document.querySelectorAll('#compare-view video, #player')]"
                               ".every(v => v.readyState >= 2)")
        page.wait_for_selector("#effect:not([hidden]) #difference-stats dd")
        page.evaluate(f"""async () => {{
            for (const v of document.querySelectorAll('#compare-view video, #player')) {{
                await v.play();  // once, so that the player's controls leave their loading state
                v.pause();
                v.currentTime = {frame_s};
            }}
        }}""")
        page.wait_for_function("() => [...document.querySelectorAll('#compare-view video, #player')]"
                               ".every(v => !v.seeking && v.readyState >= 2)")
        page.click("#refresh")
        page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 2")
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.playground_screenshot",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/playground.png"),
                        help="PNG path (default: %(default)s)")
    parser.add_argument("--weights", default="vq=1,mq=1",
                        help="weights A, e.g. vq=1,mq=1 (default: %(default)s)")
    parser.add_argument("--prompt", default="a red circle moving right", help="prompt (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=3, help="seed of both videos (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default: %(default)s)")
    parser.add_argument("--frame", type=float, default=0.5, help="second shown in both videos (default: %(default)s)")
    args = parser.parse_args(argv)
    weights = {k.strip(): float(v) for k, v in (item.split("=") for item in args.weights.split(","))}
    print(f"wrote {capture(args.out, weights, args.prompt, args.seed, args.steps, args.frame)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
