"""``PipelineFamily.tile_vae`` (``nrg serve --vae-tiling``): diffusers' VAE tiling and slicing under the families'
own decode, with and without a graph, and the server flag reaching every hosted model's VAE."""

from __future__ import annotations

import torch

from guidance.families import load_pipeline
from guidance.families.base import VideoShape
from server.config import ServerConfig, load_models

SHAPE = VideoShape(height=32, width=64, frames=5)


def _latents(family, rows=2):
    return family.prepare_latents(SHAPE, [torch.Generator("cpu").manual_seed(row) for row in range(rows)])


def test_a_clip_within_one_tile_decodes_as_before_and_a_tiled_one_close_to_it(tiny_dir):
    family = load_pipeline(tiny_dir("wan"))  # its own copy: tiling changes the VAE's state
    latents = _latents(family)
    generators = [torch.Generator("cpu").manual_seed(0)] * 2
    plain = family.decode(latents, SHAPE, generators)
    family.tile_vae()
    assert family.pipe.vae.use_tiling and family.pipe.vae.use_slicing
    torch.testing.assert_close(family.decode(latents, SHAPE, generators), plain, atol=1e-5, rtol=0)
    # Tiles smaller than the clip: 16 px with a stride of 8 over 32 x 64 pixels, seams blended.
    family.pipe.vae.enable_tiling(tile_sample_min_height=16, tile_sample_min_width=16,
                                  tile_sample_stride_height=8, tile_sample_stride_width=8)
    tiled = family.decode(latents, SHAPE, generators)
    assert tiled.shape == plain.shape and not torch.equal(tiled, plain)
    assert float((tiled - plain).abs().mean()) < 0.1
    # A judge's gradient runs back through the tiles.
    x = latents[:1].clone().requires_grad_()
    family.decode_with_grad(x, SHAPE, generators[:1]).mean().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_the_server_flag_tiles_every_hosted_models_vae(tiny_dir):
    hosted = load_models(ServerConfig(models={"mine": tiny_dir("wan")}, device="cpu", vae_tiling=True))
    vae = hosted["mine"].family.pipe.vae
    assert vae.use_tiling and vae.use_slicing
    plain = load_models(ServerConfig(models={"mine": tiny_dir("wan")}, device="cpu"))
    assert not plain["mine"].family.pipe.vae.use_tiling
