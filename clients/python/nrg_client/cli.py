"""``nrg-client``: the jobs API from a shell, without curl or Python.

``generate`` queues a job, shows its progress from the event stream and downloads the video;
``list``, ``get``, ``events``, ``download`` and ``cancel`` map one to one onto the API. The server and
key come from ``--base-url`` / ``--api-key`` or ``$NRG_BASE_URL`` / ``$NRG_API_KEY``, as for
:class:`nrg_client.Client`. API errors print one line (``nrg-client: error: ...``) and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nrg_client.arg_types import window
from nrg_client.client import Client
from nrg_client.errors import NRGError
from nrg_client.types import Video

MODES = ("relative", "sum", "unit", "best_of_n", "fk")


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"weights must be name=value,..., e.g. vq=0.5,ta=1; got {text!r}")
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nrg-client", description="Drive an nrg-serve video-jobs server.")
    parser.add_argument("--base-url", default=None, help="server URL (default: $NRG_BASE_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=None, help="bearer key (default: $NRG_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="queue a job, follow its progress, download the video")
    gen.add_argument("prompt")
    gen.add_argument("--model", default=None)
    gen.add_argument("--negative-prompt", default=None)
    gen.add_argument("--size", default=None, help="WIDTHxHEIGHT (default: the model's)")
    gen.add_argument("--frames", type=int, default=None, dest="num_frames")
    gen.add_argument("--steps", type=int, default=None, dest="num_inference_steps")
    gen.add_argument("--cfg", type=float, default=None, dest="guidance_scale")
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--checkpoint", default=None, help="a registered aligned checkpoint")
    gen.add_argument("--checkpoint-scale", type=float, default=None,
                     help="a LoRA checkpoint's scale: 0 = base model, 1 = as trained (default)")
    gen.add_argument("--weights", type=_weights, default=None, dest="reward_weights",
                     help="objective weights, e.g. vq=0.1,mq=0.1,ta=0.8 (default: unguided)")
    gen.add_argument("--strength", type=float, default=None)
    gen.add_argument("--window", type=window, default=None, help="t_lo,t_hi")
    gen.add_argument("--mode", choices=MODES, default=None)
    gen.add_argument("--particles", type=int, default=None)
    gen.add_argument("--judges", type=lambda text: [j.strip() for j in text.split(",") if j.strip()], default=None,
                     help="comma-separated held-out judges of the server to score the video (default: all)")
    given = gen.add_mutually_exclusive_group()
    given.add_argument("--image", type=Path, default=None, dest="input_reference",
                       help="image-to-video: the first frame (PNG, JPEG or WebP), for models that take one")
    given.add_argument("--video", type=Path, default=None, dest="input_reference",
                       help="video-to-video: a clip (MP4 or WebM) to start from, for models that take one")
    gen.add_argument("--denoise-strength", type=float, default=None,
                     help="video-to-video: the share of the schedule run from the noised clip, in (0, 1] "
                          "(server default 0.8)")
    gen.add_argument("--compare-unguided", action="store_true", default=None,
                     help="also run the request unguided in the same batch (one more sample) and print what guidance "
                          "changed against it, flagging reward hacking (needs --weights)")
    gen.add_argument("--out", type=Path, default=Path("."), help="file or directory (default: .)")
    gen.add_argument("--quiet", action="store_true", help="no progress lines")

    listing = sub.add_parser("list", help="recent jobs, newest first")
    listing.add_argument("--limit", type=int, default=20)
    for name, text in (("get", "one job as JSON"), ("events", "the job's events, one JSON object per line"),
                       ("cancel", "cancel a queued or running job")):
        sub.add_parser(name, help=text).add_argument("video_id")
    download = sub.add_parser("download", help="write a finished job's video (or thumbnail)")
    download.add_argument("video_id")
    download.add_argument("--out", type=Path, default=Path("."), help="file or directory (default: .)")
    download.add_argument("--thumbnail", action="store_true", help="the WebP thumbnail instead of the mp4")
    return parser


def _summary(video: Video) -> str:
    rewards = " ".join(f"{k}={v:.4f}" for k, v in (video.rewards or {}).items()) or "-"
    return f"{video.id}  {video.status:<11} {video.model}  {video.size}x{video.num_frames}  {rewards}"


def score_lines(video: Video) -> list[str]:
    """The job's two kinds of score, labelled: what guidance optimised, and what held-out judges say; with
    ``compare_unguided``, its unguided twin's and the verdict on reward hacking."""
    lines = []
    if video.rewards:
        lines.append("optimised reward (what guidance pushed up): "
                     + " ".join(f"{k}={v:.4f}" for k, v in video.rewards.items()))
    for judge, scores in (video.judge_scores or {}).items():
        lines.append(f"held-out judge {judge} (not optimised): " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    return lines + twin_lines(video)


def twin_lines(video: Video) -> list[str]:
    """The unguided twin's figures, the changes against it and the verdict (none without a twin)."""
    twin = video.unguided
    if twin is None:
        return []
    if twin.error is not None:
        return [f"unguided twin: {twin.error}"]
    lines = ["unguided twin, optimised reward: " + " ".join(f"{k}={v:.4f}" for k, v in (twin.rewards or {}).items())]
    for judge, scores in (twin.judge_scores or {}).items():
        lines.append(f"unguided twin, held-out judge {judge}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    for change in twin.changes:
        lines.append(f"vs unguided, {change.objective}: reward {change.reward_change:+.4g}, judge {change.judge} "
                     f"{change.judge_change:+.4g}")
    if video.reward_hacking is None:
        lines.append("reward hacking: not judged (no held-out judge scores an objective guidance pushed up, by name)")
    elif not video.reward_hacking:
        lines.append("reward hacking: none (no judge of an objective guidance pushed up says it fell)")
    for change in video.reward_hacking or []:
        lines.append(f"REWARD HACKING: guidance raised {change.objective} while judge {change.judge} says it fell")
    return lines


def _generate(client: Client, args: argparse.Namespace) -> int:
    keys = ("model", "negative_prompt", "size", "num_frames", "num_inference_steps", "guidance_scale", "seed",
            "checkpoint", "checkpoint_scale", "reward_weights", "strength", "window", "mode", "particles",
            "judges", "input_reference", "denoise_strength", "compare_unguided")
    video = client.create(args.prompt, **{k: getattr(args, k) for k in keys})
    print(f"queued {video.id}", file=sys.stderr)
    for event in client.events(video.id):
        if args.quiet:
            continue
        if event.type == "started":
            print(f"started in a batch of {event.batch_size}", file=sys.stderr)
        elif event.type == "step":
            rewards = " ".join(f"{k}={v:.3f}" for k, v in (event.rewards or {}).items())
            print(f"step {event.step}/{event.steps}  t={event.t:.3f}  {rewards}".rstrip(), file=sys.stderr)
    video = client.get(video.id)
    if video.status != "completed":
        reason = video.error.message if video.error else video.status
        print(f"nrg-client: error: {video.id} {video.status}: {reason}", file=sys.stderr)
        return 1
    path = client.download(video.id, args.out)
    print(f"wrote {path}")
    print(_summary(video))
    for line in score_lines(video):
        print(line)
    return 0


def run(client: Client, args: argparse.Namespace) -> int:
    if args.command == "generate":
        return _generate(client, args)
    if args.command == "list":
        for video in client.list(limit=args.limit).data:
            print(_summary(video))
    elif args.command == "get":
        print(client.get(args.video_id).model_dump_json(indent=2))
    elif args.command == "events":
        for event in client.events(args.video_id):
            print(json.dumps(event.model_dump(exclude_none=True)), flush=True)
    elif args.command == "download":
        print(f"wrote {client.download(args.video_id, args.out, variant='thumbnail' if args.thumbnail else 'video')}")
    elif args.command == "cancel":
        print(_summary(client.cancel(args.video_id)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.base_url, api_key=args.api_key) as client:
            return run(client, args)
    except NRGError as exc:
        print(f"nrg-client: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
