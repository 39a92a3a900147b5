"""The batched multi-LoRA product: the reference against a per-sample loop, the Triton kernel (in the
interpreter, see tests/conftest.py) and the gathered form (what ``torch.compile`` traces) against the
reference, and the argument checks."""

from __future__ import annotations

import pytest
import torch

from kernels import lora_batch_triton as lbt
from kernels.lora_batch import lora_batch
from kernels.lora_batch_reference import lora_batch_gathered, lora_batch_reference


def make(batch=4, tokens=20, width=40, out=36, rank=6, adapters=3, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, tokens, width, generator=gen).to(dtype)
    a = torch.randn(adapters, rank, width, generator=gen).to(dtype)
    b = torch.randn(adapters, out, rank, generator=gen).to(dtype)
    index = torch.tensor([1, -1, 0, 1][:batch] + [2] * max(0, batch - 4))
    coef = torch.tensor([0.5, 3.0, 1.0, -2.0][:batch] + [0.25] * max(0, batch - 4))
    return x, a, b, index, coef


def per_sample(x, a, b, index, coef):
    rows = []
    for row in range(x.shape[0]):
        k = int(index[row])
        rows.append(torch.zeros(*x.shape[1:-1], b.shape[1]) if k < 0 else
                    float(coef[row]) * (x[row].float() @ a[k].float().t()) @ b[k].float().t())
    return torch.stack(rows)


def test_reference_is_each_sample_with_its_own_adapter():
    args = make()
    delta = lora_batch_reference(*args)
    torch.testing.assert_close(delta, per_sample(*args), rtol=1e-5, atol=1e-4)
    assert torch.equal(delta[1], torch.zeros_like(delta[1]))  # no adapter: exactly zero


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [dict(tokens=20, width=40, out=36, rank=6), dict(tokens=7, width=16, out=50, rank=17)],
                         ids=["ragged", "rank-above-16"])
def test_triton_matches_the_reference(monkeypatch, dtype, shape):
    monkeypatch.setenv("NRG_KERNEL", "triton")
    calls = []
    real = lbt.lora_batch_triton
    monkeypatch.setattr(lbt, "lora_batch_triton", lambda *a: calls.append(1) or real(*a))
    args = make(dtype=dtype, **shape)
    delta = lora_batch(*args)
    assert calls and delta.dtype == dtype and delta.shape == (4, shape["tokens"], shape["out"])
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-1)
    torch.testing.assert_close(delta.float(), lora_batch_reference(*args).float(), **tol)
    assert torch.equal(delta[1], torch.zeros_like(delta[1]))


def test_the_gathered_form_is_the_reference():
    args = make()
    delta = lora_batch_gathered(*args)
    torch.testing.assert_close(delta, lora_batch_reference(*args), rtol=1e-5, atol=1e-4)
    assert torch.equal(delta[1], torch.zeros_like(delta[1]))


def test_traced_by_torch_compile_in_one_graph_at_any_batch_size():
    """Under compile the public function takes the gathered form (no host read: ``fullgraph`` raises at
    a graph break) and adds in place as it does eagerly; the batch size is symbolic."""
    compiled = torch.compile(lora_batch, backend="aot_eager", fullgraph=True, dynamic=True)
    for batch in (2, 3, 5):
        x, a, b, index, coef = make(batch=batch)
        base = torch.randn(batch, 20, 36, generator=torch.Generator().manual_seed(batch))
        expected = base + lora_batch_reference(x, a, b, index, coef)
        torch.testing.assert_close(compiled(x, a, b, index, coef, out=base.clone()), expected, rtol=1e-5, atol=1e-4)


def test_extra_dims_are_tokens():
    x, a, b, index, coef = make()
    flat = lora_batch_reference(x, a, b, index, coef)
    shaped = lora_batch_reference(x.reshape(4, 4, 5, 40), a, b, index, coef)
    assert shaped.shape == (4, 4, 5, 36) and torch.equal(shaped.reshape(4, 20, 36), flat)


@pytest.mark.parametrize(("change", "message"), [
    (dict(a=torch.zeros(3, 6, 41)), "a_stack's last dim must be x's"),
    (dict(b=torch.zeros(3, 36, 5)), r"b_stack must be \[n, out, R\]"),
    (dict(index=torch.zeros(3, dtype=torch.long)), "index must be an integer tensor of shape"),
    (dict(coef=torch.zeros(4, dtype=torch.float64)), "coef must be float32"),
    (dict(x=[[1.0]]), "x must be a torch.Tensor"),
])
def test_bad_arguments(change, message):
    x, a, b, index, coef = make()
    args = {"x": x, "a": a, "b": b, "index": index, "coef": coef, **change}
    with pytest.raises(ValueError, match=message):
        lora_batch_reference(args["x"], args["a"], args["b"], args["index"], args["coef"])


def test_triton_adds_in_place_to_the_layers_output():
    x, a, b, index, coef = make()
    base = torch.randn(4, 20, 36, generator=torch.Generator().manual_seed(5))
    out = base.clone()
    returned = lbt.lora_batch_triton(x, a, b, index, coef, out=out)
    assert returned is out
    torch.testing.assert_close(out, base + lora_batch_reference(x, a, b, index, coef), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="out must be a contiguous tensor"):
        lbt.lora_batch_triton(x, a, b, index, coef, out=base.transpose(0, 1))


def test_token_offsets_past_int32_are_64_bit():
    """A view whose tokens lie 2**30 elements apart: the third starts at 2**31, where an int32 offset
    computation (token index x token stride, both below 2**31) wraps to a negative address. Only the
    touched pages of the 4 GiB (virtual) buffer are ever written: the test costs kilobytes of memory."""
    width, stride, tokens = 32, 2**30, 3
    buffer = torch.empty(stride * (tokens - 1) + width, dtype=torch.float16)
    x = buffer.as_strided((1, tokens, width), (stride * tokens, stride, 1))
    values = torch.randn(tokens, width, generator=torch.Generator().manual_seed(0)).half()
    for t in range(tokens):
        x[0, t] = values[t]
    _, a, b, _, _ = make(width=width, out=16, dtype=torch.float16)
    index, coef = torch.tensor([1]), torch.tensor([0.5])
    delta = lbt.lora_batch_triton(x, a, b, index, coef)
    expected = lora_batch_reference(values[None], a, b, index, coef)
    torch.testing.assert_close(delta, expected, rtol=2e-2, atol=2e-2)
