"""Tests of the guided step: the reference against hand-computed numbers, the Triton kernel against the
reference, the skip/zero-weight/coef-0 contracts on both backends, the dispatcher and validation.

The Triton kernels run on CPU tensors in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before anything defines a kernel), so these tests execute them without a GPU.
``BLOCK_SIZE`` is shrunk to 64 (and the partial-sum reduction width to 4) so that the small samples
used here span several chunks with a ragged tail, which exercises the masking and the cross-chunk
reduction while keeping the interpreter fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from kernels import guided_step_triton as gst
from kernels.guided_step import GuidedStepStats, guided_step, guided_step_backend
from kernels._guided_step_common import prepare_inputs
from kernels.guided_step_reference import guided_step_reference

SMALL_BLOCK = 64
#: Makes the per-chunk partials of a sample (up to 7 chunks here) take several reduction iterations.
SMALL_FINALIZE_BLOCK = 4
BACKENDS = ("torch", "triton")
MODES = ("relative", "sum", "unit")
#: Output tolerances per storage dtype (the kernel and the reference differ by the summation order of
#: the norms, and the interpreter rounds float32 -> bfloat16 by truncation, i.e. up to 1 ulp).
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float16: dict(rtol=2e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2),
}

Args = dict[str, object]
Runner = Callable[[str, Args], tuple[torch.Tensor, GuidedStepStats]]


def reference(**args: object) -> tuple[torch.Tensor, GuidedStepStats]:
    """The PyTorch reference on validated arguments, as the dispatcher calls it."""
    return guided_step_reference(prepare_inputs(**args))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Call ``guided_step`` with NRG_KERNEL forced, and check the Triton implementation really ran."""
    calls: list[None] = []
    real = gst.guided_step_triton

    def spy(*args: object, **kwargs: object) -> tuple[torch.Tensor, GuidedStepStats]:
        calls.append(None)
        return real(*args, **kwargs)

    monkeypatch.setattr(gst, "guided_step_triton", spy)
    monkeypatch.setattr(gst, "BLOCK_SIZE", SMALL_BLOCK)
    monkeypatch.setattr(gst, "MAX_FINALIZE_BLOCK", SMALL_FINALIZE_BLOCK)

    def call(backend: str, args: Args) -> tuple[torch.Tensor, GuidedStepStats]:
        monkeypatch.setenv("NRG_KERNEL", backend)
        before = len(calls)
        result = guided_step(**args)
        assert len(calls) - before == (backend == "triton")
        return result

    return call


def make_args(
    batch: int,
    num_obj: int,
    spatial: tuple[int, ...],
    dtype: torch.dtype,
    *,
    cfg: bool = True,
    with_x: bool = True,
    mode: str = "sum",
) -> Args:
    """Random inputs with per-sample settings that differ (including a coef of 0 when B > 1)."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    coef = rand(batch).abs() + 0.1
    if batch > 1:
        coef[1] = 0.0
    args: Args = dict(
        pred_cond=rand(batch, *spatial).to(dtype),
        grads=rand(batch, num_obj, *spatial).to(dtype),
        weights=rand(batch, num_obj),
        coef=coef,
        mode=mode,
    )
    if cfg:
        args.update(pred_uncond=rand(batch, *spatial).to(dtype), cfg_scale=rand(batch).abs() * 3 + 1)
    if with_x:
        args.update(x=rand(batch, *spatial).to(dtype), dt=-rand(batch).abs() * 0.1)
    return args


def unguided_args(args: Args) -> Args:
    """The same step with guidance off for every sample (coef 0, zero gradients)."""
    return {**args, "coef": torch.zeros_like(args["coef"]), "grads": torch.zeros_like(args["grads"])}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), **TOL[dtype])


# --------------------------------------------------------------------------------------------------
# The oracle, against numbers worked out by hand.


def hand_args(mode: str) -> Args:
    """Two samples, two objectives, three elements; the expected values are in test_reference_by_hand."""
    nan = float("nan")
    return dict(
        pred_cond=torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]),
        pred_uncond=torch.tensor([[0.0, 1.0, 1.0], [3.0, 3.0, 3.0]]),
        cfg_scale=torch.tensor([2.0, 1.0]),
        # Sample 0: norms 5 and 2. Sample 1: objective 0 is nan but has weight 0; objective 1 has norm 3.
        grads=torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], [[nan, 0.0, 0.0], [1.0, 2.0, 2.0]]]),
        weights=torch.tensor([[1.0, 0.5], [0.0, 2.0]]),
        coef=torch.tensor([0.1, -1.0]),
        x=torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]),
        dt=torch.tensor([-0.5, 1.0]),
        mode=mode,
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # p_cfg = [2, 3, 5] and [1, 1, 1].
        # sum:  G0 = [3, 4, 0] + 0.5 * [0, 0, 2] = [3, 4, 1]; p0 = p_cfg0 - 0.1 * G0; out0 = 1 - 0.5 * p0.
        #       G1 = 2 * [1, 2, 2];                            p1 = p_cfg1 + G1;       out1 = p1.
        ("sum", [[0.15, -0.3, -1.45], [3.0, 5.0, 5.0]]),
        # unit: G0 = [0.6, 0.8, 0] + 0.5 * [0, 0, 1] = [0.6, 0.8, 0.5]; G1 = 2 * [1, 2, 2] / 3.
        ("unit", [[0.03, -0.46, -1.475], [5 / 3, 7 / 3, 7 / 3]]),
        # relative: reference RMS = RMS(cond - uncond) = sqrt(6 / 3) and sqrt(12 / 3) = 2; gradient RMS
        # = norm / sqrt(3). G0 = sqrt(2) * sqrt(3) * ([3, 4, 0] / 5 + 0.5 * [0, 0, 2] / 2)
        # = sqrt(6) * [0.6, 0.8, 0.5]; G1 = 2 * 2 * [1, 2, 2] / sqrt(3).
        ("relative", [[0.05 * 6 ** 0.5 * 0.6, -0.5 + 0.05 * 6 ** 0.5 * 0.8, -1.5 + 0.05 * 6 ** 0.5 * 0.5],
                      [1 + 4 / 3 ** 0.5, 1 + 8 / 3 ** 0.5, 1 + 8 / 3 ** 0.5]]),
    ],
)
def test_reference_by_hand(mode: str, expected: list[list[float]]) -> None:
    out, stats = reference(**hand_args(mode))
    torch.testing.assert_close(out, torch.tensor(expected), rtol=0, atol=1e-6)
    assert stats.skipped.tolist() == [False, False]
    torch.testing.assert_close(stats.grad_norms, torch.tensor([[5.0, 2.0], [float("nan"), 3.0]]), equal_nan=True)


def test_relative_reports_the_reference_rms_and_falls_back_without_cfg() -> None:
    args = hand_args("relative")
    _, stats = reference(**args)
    torch.testing.assert_close(stats.reference_rms, torch.tensor([2 ** 0.5, 2.0]))
    # Sample 1 without CFG inside a CFG batch: its uncond is a copy of cond, the difference is zero,
    # and the push is sized against RMS(cond) = 1 instead.
    args["pred_uncond"] = args["pred_uncond"].clone()
    args["pred_uncond"][1] = args["pred_cond"][1]
    _, stats = reference(**args)
    torch.testing.assert_close(stats.reference_rms, torch.tensor([2 ** 0.5, 1.0]))
    for name in ("pred_uncond", "cfg_scale"):
        del args[name]
    _, stats = reference(**args)
    torch.testing.assert_close(stats.reference_rms, torch.tensor([(14 / 3) ** 0.5, 1.0]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_relative_push_ignores_the_gradient_scale_and_follows_the_cfg_term(run: Runner, backend: str) -> None:
    """The rule the server defaults to: scaling a reward (its gradient) changes nothing, while the push
    grows with the CFG difference, so one strength means the same on any reward and any t."""
    args = make_args(3, 2, (4, 3, 5, 7), torch.float32, mode="relative", with_x=False)
    out, _ = run(backend, args)
    steeper, _ = run(backend, {**args, "grads": args["grads"] * 1000.0})
    torch.testing.assert_close(steeper, out, rtol=1e-5, atol=1e-5)
    push = out - run(backend, unguided_args(args))[0]
    wider = {**args, "pred_uncond": args["pred_cond"] - 2 * (args["pred_cond"] - args["pred_uncond"])}
    wider_push = run(backend, wider)[0] - run(backend, unguided_args(wider))[0]
    torch.testing.assert_close(wider_push, 2 * push, rtol=1e-4, atol=1e-5)
    assert push[0].abs().max() > 0 and push[1].abs().max() == 0  # make_args gives sample 1 coef 0


def test_reference_by_hand_without_cfg_or_x() -> None:
    args = hand_args("sum")
    for name in ("pred_uncond", "cfg_scale", "x", "dt"):
        del args[name]
    out, _ = reference(**args)
    # p0 = [1, 2, 3] - 0.1 * [3, 4, 1]; p1 = [1, 1, 1] + 2 * [1, 2, 2].
    torch.testing.assert_close(out, torch.tensor([[0.7, 1.6, 2.9], [3.0, 5.0, 5.0]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_kernel_by_hand(run: Runner, mode: str) -> None:
    ref_out, ref_stats = reference(**hand_args(mode))
    out, stats = run("triton", hand_args(mode))
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.grad_norms, ref_stats.grad_norms, equal_nan=True)
    assert stats.skipped.tolist() == [False, False]


# --------------------------------------------------------------------------------------------------
# The kernel against the reference.

# (B, K, S, CFG, x): sample sizes 420, 35, 111 and 130 elements against a 64-element block.
CASES = [
    (1, 1, (4, 3, 5, 7), True, True),
    (3, 2, (5, 7), False, True),
    (8, 4, (3, 1, 37), True, False),
    (3, 4, (2, 65), False, False),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(("batch", "num_obj", "spatial", "cfg", "with_x"), CASES)
def test_kernel_matches_reference(
    run: Runner, batch: int, num_obj: int, spatial: tuple[int, ...], cfg: bool, with_x: bool,
    dtype: torch.dtype, mode: str,
) -> None:
    args = make_args(batch, num_obj, spatial, dtype, cfg=cfg, with_x=with_x, mode=mode)
    if num_obj > 1:
        args["weights"][0, 1] = 0.0  # a zero-weight objective among others
    ref_out, ref_stats = reference(**args)
    out, stats = run("triton", args)
    assert_close(out, ref_out, dtype)
    assert stats.grad_norms.dtype == torch.float32 and stats.grad_norms.shape == (batch, num_obj)
    torch.testing.assert_close(stats.grad_norms, ref_stats.grad_norms, rtol=1e-5, atol=1e-6)
    assert stats.skipped.dtype == torch.bool and stats.skipped.shape == (batch,)
    assert not stats.skipped.any()
    if mode == "relative":
        torch.testing.assert_close(stats.reference_rms, ref_stats.reference_rms, rtol=1e-5, atol=1e-6)
    else:
        assert stats.reference_rms is None and ref_stats.reference_rms is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_storage_dtypes(run: Runner, backend: str) -> None:
    """Gradients, predictions and latents may each have their own dtype; the output follows x."""
    args = make_args(3, 2, (5, 9), torch.float32)
    args.update(grads=args["grads"].to(torch.bfloat16), x=args["x"].to(torch.float16))
    out, _ = run(backend, args)
    ref_out, _ = reference(**args)
    assert out.dtype == torch.float16
    assert_close(out, ref_out, torch.float16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs(run: Runner, backend: str) -> None:
    args = make_args(3, 2, (6, 10), torch.float32)
    strided = dict(args)
    for name in ("pred_cond", "pred_uncond", "x"):
        strided[name] = args[name].transpose(1, 2).contiguous().transpose(1, 2)
    strided["grads"] = torch.cat([args["grads"], args["grads"]], dim=-1)[..., :10]
    strided["weights"] = args["weights"].t().contiguous().t()
    assert not any(strided[n].is_contiguous() for n in ("pred_cond", "pred_uncond", "x", "grads", "weights"))
    out, stats = run(backend, strided)
    expected, expected_stats = run(backend, args)
    assert torch.equal(out, expected)
    assert torch.equal(stats.grad_norms, expected_stats.grad_norms)


# --------------------------------------------------------------------------------------------------
# Non-finite gradients, zero weights and coef 0: the same contract on both backends.


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy squares
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e30], ids=["nan", "inf", "overflow"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_gradient_skips_only_its_sample(run: Runner, backend: str, mode: str, bad: float) -> None:
    """A nan/inf element (or squares overflowing float32) in a weighted gradient skips that sample."""
    args = make_args(3, 2, (4, 3, 5, 7), torch.float32, mode=mode)
    args["coef"] = torch.tensor([0.5, 1.5, 2.0])
    clean_out, _ = run(backend, args)
    poisoned = dict(args, grads=args["grads"].clone())
    poisoned["grads"][1, 0, 2, 1, 3, 4] = bad
    out, stats = run(backend, poisoned)

    assert stats.skipped.tolist() == [False, True, False]
    assert not torch.isfinite(stats.grad_norms[1, 0])
    unguided, _ = run(backend, unguided_args(poisoned))
    assert torch.equal(out[1], unguided[1])
    assert torch.equal(out[[0, 2]], clean_out[[0, 2]])
    ref_out, ref_stats = reference(**poisoned)
    assert torch.equal(ref_stats.skipped, stats.skipped)
    assert_close(out, ref_out, torch.float32)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_gradient_with_zero_weight_is_ignored(run: Runner, backend: str, mode: str) -> None:
    args = make_args(3, 3, (4, 3, 5, 7), torch.float32, mode=mode)
    args["coef"] = torch.tensor([0.5, 1.5, 2.0])
    args["weights"][1, 2] = 0.0
    zeroed, _ = run(backend, {**args, "grads": args["grads"].clone().index_fill_(1, torch.tensor([2]), 0.0)})
    args["grads"][1, 2, 0, 0, 0, 0] = float("nan")
    out, stats = run(backend, args)

    assert not stats.skipped.any()
    assert torch.isnan(stats.grad_norms[1, 2])
    assert torch.isfinite(out).all()
    assert torch.equal(out[1], zeroed[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_coef_zero_is_bit_identical_to_unguided(run: Runner, backend: str, mode: str, dtype: torch.dtype) -> None:
    """coef 0 selects p_cfg; it is not skipped and never reads its (here nan) gradients."""
    args = make_args(3, 2, (4, 3, 5, 7), dtype, mode=mode)
    args["grads"][1] = float("nan")  # make_args gives sample 1 coef 0
    out, stats = run(backend, args)
    unguided, _ = run(backend, unguided_args(args))

    assert stats.skipped.tolist() == [False, False, False]
    assert torch.equal(out[1], unguided[1])
    assert not torch.equal(out[0], unguided[0])  # the other samples are guided
    if dtype == torch.float32:
        # The unguided step written out; float32 throughout, so exact on CPU for both backends.
        f = {name: args[name] for name in ("pred_cond", "pred_uncond", "cfg_scale", "x", "dt")}
        p_cfg = f["pred_uncond"][1] + f["cfg_scale"][1] * (f["pred_cond"][1] - f["pred_uncond"][1])
        assert torch.equal(out[1], f["x"][1] + f["dt"][1] * p_cfg)


@pytest.mark.parametrize(("cfg", "with_x"), [(True, True), (False, True), (True, False)], ids=["cfg-x", "x", "cfg"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_gradient_is_the_unguided_step(run: Runner, backend: str, cfg: bool, with_x: bool) -> None:
    """grads=None: the rows of a batch not guided at this step; no gradient exists, the output is the
    CFG + Euler step, equal to coef 0 with any gradient."""
    args = make_args(3, 2, (4, 3, 5, 7), torch.float32, cfg=cfg, with_x=with_x)
    expected, _ = run(backend, unguided_args(args))
    out, stats = run(backend, {**args, "grads": None, "weights": None, "coef": None})

    assert torch.equal(out, expected)
    assert stats.grad_norms.shape == (3, 0) and stats.skipped.tolist() == [False, False, False]


def test_no_gradient_refuses_weights() -> None:
    with pytest.raises(ValueError, match="weights must be None when grads is None"):
        reference(**{**make_args(2, 1, (4,), torch.float32), "grads": None})


# --------------------------------------------------------------------------------------------------
# Dispatch.


def test_backend_auto_picks_torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NRG_KERNEL", raising=False)
    assert guided_step_backend(torch.zeros(1)) == "torch"
    monkeypatch.setenv("NRG_KERNEL", "")
    assert guided_step_backend(torch.zeros(1)) == "torch"
    monkeypatch.setenv("NRG_KERNEL", "auto")
    assert guided_step_backend(torch.zeros(1)) == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="auto picks Triton only for CUDA tensors")
def test_backend_auto_picks_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NRG_KERNEL", raising=False)
    assert guided_step_backend(torch.zeros(1, device="cuda")) == "triton"


@pytest.mark.parametrize("value", ["triton", "torch", "TRITON"])
def test_backend_forced(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NRG_KERNEL", value)
    assert guided_step_backend(torch.zeros(1)) == value.lower()


def test_backend_unknown_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NRG_KERNEL", "cuda")
    with pytest.raises(ValueError, match=r"NRG_KERNEL must be one of auto, triton, torch; got 'cuda'"):
        guided_step_backend(torch.zeros(1))
    with pytest.raises(ValueError, match="NRG_KERNEL"):
        guided_step(**make_args(1, 1, (3,), torch.float32))


def test_reference_path_needs_no_triton() -> None:
    """With Triton unimportable, the package imports and the CPU path runs."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from kernels.guided_step import guided_step, guided_step_backend\n"
        "x = torch.ones(2, 3)\n"
        "out, stats = guided_step(x, torch.ones(2, 1, 3), torch.ones(2, 1), torch.ones(2))\n"
        "assert guided_step_backend(x) == 'torch' and torch.equal(out, torch.zeros(2, 3))\n"
        "assert sys.modules['triton'] is None\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "NRG_KERNEL": "auto"}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_kernels_compile_for_h100() -> None:
    """The interpreter is not the compiler: build the kernels' PTX for sm_90, and check vector loads."""
    root = Path(__file__).resolve().parents[2]
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.aot_compile"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    counts = {line.split()[0]: int(line.split()[2]) for line in result.stdout.splitlines()}
    # 128-bit loads for every streamed tensor: x, pred_cond, pred_uncond and the 3 gradients.
    assert all(counts[f"step_{mode}_bf16"] >= 6 for mode in MODES), result.stdout


# --------------------------------------------------------------------------------------------------
# Validation.


def _bad(**changes: object) -> Args:
    return {**make_args(2, 3, (4, 5), torch.float32), **changes}


BAD_ARGS = [
    (
        dict(grads=torch.zeros(2, 3, 5, 4)),
        r"grads must have shape \[B, K, \*S\] = \[2, K, 4, 5\] with K >= 1; got \[2, 3, 5, 4\]",
    ),
    (dict(grads=torch.zeros(2, 0, 4, 5)), r"grads must have shape \[B, K, \*S\]"),
    (dict(grads=torch.zeros(2, 3, 4, 5, dtype=torch.float64)), "grads must be float32, float16 or bfloat16"),
    (dict(pred_cond=torch.zeros(2, 4, 5, dtype=torch.int32)), "pred_cond must be float32, float16 or bfloat16"),
    (dict(pred_cond=[[0.0]]), "pred_cond must be a torch.Tensor"),
    (dict(weights=torch.zeros(2, 2)), r"weights must have shape \[B, K\] = \[2, 3\]; got \[2, 2\]"),
    (dict(weights=torch.zeros(2, 3, dtype=torch.float16)), "weights must be float32"),
    (dict(coef=torch.zeros(3)), r"coef must have shape \[B\] = \[2\]; got \[3\]"),
    (dict(coef=torch.zeros(2, device="meta")), "coef must be on cpu like pred_cond"),
    (dict(cfg_scale=None), "pred_uncond and cfg_scale must be given together"),
    (dict(pred_uncond=torch.zeros(2, 4, 4)), r"pred_uncond must have shape \[B, \*S\] = \[2, 4, 5\]"),
    (dict(dt=None), "x and dt must be given together"),
    (dict(x=torch.zeros(1, 4, 5)), r"x must have shape \[B, \*S\]"),
    (dict(dt=torch.zeros(2, dtype=torch.float64)), "dt must be float32"),
    (dict(mode="mean"), "mode must be one of relative, sum, unit; got 'mean'"),
    (dict(eps=0.0), "eps must be a finite number > 0"),
]
BAD_ARG_IDS = [f"{i}-{message.split()[0]}" for i, (_, message) in enumerate(BAD_ARGS)]


@pytest.mark.parametrize(("changes", "message"), BAD_ARGS, ids=BAD_ARG_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(run: Runner, backend: str, changes: Args, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(backend, _bad(**changes))
