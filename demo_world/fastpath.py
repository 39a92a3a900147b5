"""CPU training fast path for the Wan VAE (used only while ``nrg demo train`` runs).

On CPU, PyTorch's ``conv3d`` backward is ~20x slower than its forward, and ``F.normalize`` over the
channel dimension of a 5-D tensor (``WanRMS_norm``) is a slow strided reduction. Inside
:func:`fast_wan_vae` both are computed by mathematically identical formulations (a causal 3-D
convolution as one 2-D convolution over time-stacked channels; the RMS norm as
``x * rsqrt(sum x^2)``), so training is several times faster. The weights, the module classes and the
saved checkpoints are untouched; outside the context the diffusers code runs as shipped.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F


def conv3d_as_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride)`` with no padding, as a single ``conv2d``."""
    out_ch, in_ch, kt, kh, kw = weight.shape
    st = stride[0]
    batch, _, frames, height, width = x.shape
    t_out = (frames - kt) // st + 1
    stacked = torch.cat([x[:, :, k: k + st * (t_out - 1) + 1: st] for k in range(kt)], dim=1)
    stacked = stacked.permute(0, 2, 1, 3, 4).reshape(batch * t_out, kt * in_ch, height, width)
    w2 = weight.permute(0, 2, 1, 3, 4).reshape(out_ch, kt * in_ch, kh, kw)
    y = F.conv2d(stacked, w2, bias, stride=tuple(stride[1:]))
    return y.reshape(batch, t_out, out_ch, y.shape[-2], y.shape[-1]).permute(0, 2, 1, 3, 4)


def _rms_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    dim = 1 if self.channel_first else -1
    inv = torch.rsqrt((x * x).sum(dim=dim, keepdim=True).clamp_min(1e-24))
    return x * inv * self.scale * self.gamma + self.bias


@contextmanager
def fast_wan_vae():
    from diffusers.models.autoencoders import autoencoder_kl_wan as wan

    conv_cls, norm_cls = wan.WanCausalConv3d, wan.WanRMS_norm
    saved_conv = conv_cls.__dict__.get("_conv_forward")
    saved_norm = norm_cls.forward
    conv_cls._conv_forward = lambda self, x, w, b: conv3d_as_conv2d(x, w, b, self.stride)
    norm_cls.forward = _rms_norm_forward
    try:
        yield
    finally:
        if saved_conv is None:
            del conv_cls._conv_forward
        else:
            conv_cls._conv_forward = saved_conv
        norm_cls.forward = saved_norm
