"""Train the demo world's small Wan text-to-video pipeline on CPU (``nrg demo train``).

Architecture (a ``WanPipeline`` of the real classes, only small):

- tokenizer: the tiny T5 tokenizer over an explicit vocabulary (``guidance.testing.tiny``);
- text encoder: a 1-layer ``UMT5EncoderModel`` (d_model 64), **randomly initialised from the seed and
  frozen**: every word of the world gets a fixed random embedding and the transformer's own text
  projection learns to read it (nothing to train, and prompt embeddings can be computed once);
- VAE: ``AutoencoderKLWan``, 4x spatial and 4x temporal compression (64x64x17 -> 8 x 5 x 16 x 16),
  base width 8; trained first, on 32x32 crops around the object of rendered clips (9 frames, then
  whole 17-frame clips for the last 30% of steps), decoding the posterior mean plus noise of std 0.1,
  with a foreground-weighted L1 + L2 loss and a small KL;
  its ``latents_mean`` / ``latents_std`` are then set to the per-channel statistics of encoded clips;
- transformer: ``WanTransformer3DModel``, 4 blocks, 4 heads x 24, patch (1, 2, 2) (320 tokens);
  trained second, with flow matching on the VAE latents of pre-encoded clips (x_t = (1 - t) x0 + t e,
  target e - x0; t half uniform, half shifted like the sampler's shift-3 schedule), 10% of prompts
  dropped to "" so classifier-free guidance works; an EMA of its weights is saved;
- scheduler: ``FlowMatchEulerDiscreteScheduler(shift=3.0)``.

Training uses only the world's training prompts (never a held-out combination) and seeds below
``EVAL_SEED_BASE``. Step counts follow from ``--minutes`` through fixed rates (so a run is a function
of its seed and arguments; deterministic on a given machine and thread count); a run that would
would overrun the wall-clock budget (less a minute for saving) stops its stage early and says so in the log and in
``demo_training.json`` (such a run is no longer reproducible step for step).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from demo_world import world

#: Steps per minute of each stage on 2 CPU cores shared with other jobs (measured while other test
#: suites ran beside it; uncontended it is about twice as fast). They turn --minutes into step counts.
VAE_STEPS_PER_MIN = 78.0
DIT_STEPS_PER_MIN = 140.0
#: Share of the budget for each stage; the rest covers rendering, encoding, saving and the check.
VAE_SHARE = 0.43
DIT_SHARE = 0.47


@dataclass
class TrainConfig:
    """One training run; ``TrainConfig.recipe(name)`` gives the settings of a published model."""

    seed: int = 0
    minutes: float = 45.0
    vae_steps: int | None = None
    dit_steps: int | None = None
    vae_batch: int = 8
    vae_frames: int = 9
    #: The last share of VAE steps trains on whole 17-frame clips: the causal VAE's feature caches only
    #: reach their steady state after a few chunks, and a VAE trained on 9 frames alone garbles the
    #: colours of chunks 3 and 4 of a 17-frame clip.
    vae_long_fraction: float = 0.3
    vae_crop: int = 32
    #: Train on footage of varied quality (``world.render_training``) instead of perfect renders only.
    varied_quality: bool = False
    vae_base_dim: int = 8
    z_dim: int = 8
    #: Weight of an L1 loss on the reconstruction's spatial differences: plain pixel losses let a
    #: small decoder smear edges by a pixel or two, which the sharpness metric reads as blur.
    edge_weight: float = 0.0
    vae_latent_noise: float = 0.1
    vae_lr: float = 3e-3
    kl_weight: float = 1e-5
    fg_weight: float = 9.0
    latent_clips: int = 1600
    dit_batch: int = 16
    dit_lr: float = 1e-3
    ema: float = 0.995
    cfg_dropout: float = 0.1
    threads: int = 2
    #: A stage stops early when the whole run has used this many times ``minutes``.
    overrun: float = 1.0
    check_clips: int = 16
    #: Take the trained VAE from this earlier run's output instead of training it (stage 1 is
    #: deterministic, so with the same seed and step count this equals training it again).
    vae_from: str | None = None
    #: Start the transformer from this earlier run's (more training of a model that stopped short); its
    #: latents are that run's VAE's, so the VAE is taken from there too.
    transformer_from: str | None = None
    log: dict = field(default_factory=dict)

    @classmethod
    def recipe(cls, name: str, **overrides) -> TrainConfig:
        """The settings of a published model (``RECIPES``), with ``overrides`` on top."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        return cls(**{**RECIPES[name], **overrides})

    def resolved_steps(self) -> tuple[int, int]:
        vae = self.vae_steps if self.vae_steps is not None else max(1, round(VAE_STEPS_PER_MIN * VAE_SHARE * self.minutes))
        dit = self.dit_steps if self.dit_steps is not None else max(1, round(DIT_STEPS_PER_MIN * DIT_SHARE * self.minutes))
        return vae, dit


#: v1: the model embedded on 2026-11-24 (perfect renders, a VAE of base width 8 whose round trip halves
#: edge sharpness). v2: demo world v2, footage of varied quality and a VAE with room to keep edges.
RECIPES: dict[str, dict] = {
    "v1": {},
    "v2": {"varied_quality": True, "vae_base_dim": 16, "z_dim": 16, "edge_weight": 1.0, "vae_latent_noise": 0.05,
           "latent_clips": 4000, "vae_steps": 1800, "dit_steps": 6000, "minutes": 100.0},
}


def build_demo_pipeline(seed: int = 0, z_dim: int = 8, vae_base_dim: int = 8):
    """The untrained demo ``WanPipeline`` (weights drawn from ``seed``)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from guidance.testing.tiny import tiny_t5_tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tokenizer = tiny_t5_tokenizer()
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        )).eval()
        vae = AutoencoderKLWan(
            base_dim=vae_base_dim, z_dim=z_dim, dim_mult=[1, 2, 4], num_res_blocks=1, temperal_downsample=[True, True],
            latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim, scale_factor_spatial=4, scale_factor_temporal=4,
        )
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=24, in_channels=z_dim,
            out_channels=z_dim, text_dim=64, freq_dim=64, ffn_dim=256, num_layers=4, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae.eval(), transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _to_video_tensor(clips: np.ndarray) -> torch.Tensor:
    """[B, F, H, W, 3] in [0, 1] -> [B, 3, F, H, W] in [-1, 1] (the VAE's input)."""
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).mul(2.0).sub(1.0).contiguous()


def render_batch(rng: np.random.Generator, batch: int, frames: int = world.FRAMES,
                 varied_quality: bool = False) -> tuple[np.ndarray, list[str]]:
    """``batch`` training clips (random training prompts and seeds), cropped to ``frames`` frames."""
    render = world.render_training if varied_quality else world.render
    clips, prompts = [], []
    for _ in range(batch):
        prompt = world.sample_training_prompt(rng)
        seed = int(rng.integers(world.EVAL_SEED_BASE))
        clip = render(prompt, seed)
        start = int(rng.integers(world.FRAMES - frames + 1))
        clips.append(clip[start:start + frames])
        prompts.append(prompt.text)
    return np.stack(clips), prompts


def render_crops(rng: np.random.Generator, batch: int, frames: int, crop: int,
                 varied_quality: bool = False) -> np.ndarray:
    """Training clips cut to ``frames`` frames and a ``crop`` x ``crop`` window around the object."""
    out = []
    for _ in range(batch):
        seed = int(rng.integers(world.EVAL_SEED_BASE))
        params = world.clip_params(world.sample_training_prompt(rng), seed)
        quality = world.draw_quality(seed) if varied_quality else world.PERFECT
        clip = world.render_params(params, quality=quality, seed=seed)
        start = int(rng.integers(world.FRAMES - frames + 1))
        cx, cy = params.centre(start + frames // 2)
        x0, y0 = (int(round(c - crop / 2 + rng.integers(-crop // 4, crop // 4 + 1))) for c in (cx, cy))
        x0, y0 = min(max(x0, 0), world.WIDTH - crop), min(max(y0, 0), world.HEIGHT - crop)
        out.append(clip[start:start + frames, y0:y0 + crop, x0:x0 + crop])
    return np.stack(out)


def _cosine_lr(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class _Clock:
    def __init__(self, minutes: float, overrun: float):
        self.start = time.monotonic()
        # One minute is kept for saving and the held-out check.
        self.limit_s = max(minutes * overrun - 1.0, 0.5 * minutes) * 60.0

    @property
    def elapsed_min(self) -> float:
        return (time.monotonic() - self.start) / 60.0

    def over(self) -> bool:
        return time.monotonic() - self.start > self.limit_s


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """``vae._decode`` without its final clamp to [-1, 1] (a clamp passes no gradient to saturated
    pixels, which stalls early training on the dark background)."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(z.shape[2]):
        vae._conv_idx = [0]
        frames.append(vae.decoder(x[:, :, i:i + 1], feat_cache=vae._feat_map, feat_idx=vae._conv_idx,
                                  first_chunk=i == 0))
    vae.clear_cache()
    return torch.cat(frames, 2)


def train_vae(pipe, cfg: TrainConfig, steps: int, rng: np.random.Generator, clock: _Clock, progress: bool) -> dict:
    from demo_world.fastpath import fast_wan_vae

    vae = pipe.vae.train()
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.vae_lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, stopped = [], None
    bar = tqdm(range(steps), desc="vae", unit="step", disable=not progress)
    with fast_wan_vae():
        for step in bar:
            if clock.over():
                stopped = step
                break
            for group in opt.param_groups:
                group["lr"] = _cosine_lr(step, steps, cfg.vae_lr, warmup=20)
            frames = world.FRAMES if step >= steps * (1 - cfg.vae_long_fraction) else cfg.vae_frames
            x = _to_video_tensor(render_crops(rng, cfg.vae_batch, frames, cfg.vae_crop, cfg.varied_quality))
            h = vae._encode(x)
            mean, logvar = h.chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            # Decode the posterior mean plus a little fixed-scale noise (the transformer is trained on
            # means and decodes its own, slightly-off latents): far faster to train than sampling the
            # posterior at its initial unit variance; the KL term keeps the latent scale in check.
            z = mean + cfg.vae_latent_noise * torch.randn(mean.shape, generator=gen)
            recon = decode_unclamped(vae, z)
            # Foreground pixels (far from the clip's background level) weigh 1 + fg_weight.
            background = x.flatten(2).median(dim=2).values[:, :, None, None, None]
            weight = 1.0 + cfg.fg_weight * ((x - background).abs().amax(dim=1, keepdim=True) > 0.2).float()
            err = recon - x
            rec_loss = (weight * (err.abs() + err.pow(2))).mean()
            if cfg.edge_weight:
                rec_loss = rec_loss + cfg.edge_weight * _edge_loss(recon, x, weight)
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
            loss = rec_loss + cfg.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            losses.append(rec_loss.item())
            if step % 10 == 0:
                bar.set_postfix(rec=f"{np.mean(losses[-10:]):.4f}", kl=f"{kl.item():.2f}")
            if step % 25 == 0:
                print(f"vae step {step}: rec {np.mean(losses[-25:]):.4f}", flush=True)
    vae.eval()
    return {"steps": len(losses), "planned_steps": steps, "stopped_early_at": stopped,
            "final_rec_loss": float(np.mean(losses[-20:])) if losses else None}


def _edge_loss(recon: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 between the horizontal and vertical pixel differences of ``recon`` and ``x``."""
    loss = recon.new_zeros(())
    for dim in (-1, -2):
        size = x.shape[dim] - 1
        w = weight.narrow(dim, 0, size)
        loss = loss + (w * (recon.diff(dim=dim) - x.diff(dim=dim)).abs()).mean()
    return loss


@torch.no_grad()
def encode_clips(pipe, cfg: TrainConfig, rng: np.random.Generator, progress: bool):
    """Pre-encode ``latent_clips`` training clips: posterior means [N, z, 5, 16, 16] and prompt ids."""
    prompts = [p.text for p in world.train_prompts()]
    index = {p: i for i, p in enumerate(prompts)}
    latents, ids = [], []
    chunk = 32
    for start in tqdm(range(0, cfg.latent_clips, chunk), desc="encode", unit="batch", disable=not progress):
        n = min(chunk, cfg.latent_clips - start)
        clips, names = render_batch(rng, n, varied_quality=cfg.varied_quality)
        latents.append(pipe.vae._encode(_to_video_tensor(clips)).chunk(2, dim=1)[0])
        ids.extend(index[name] for name in names)
    return torch.cat(latents), torch.tensor(ids), prompts


def set_latent_stats(vae, latents: torch.Tensor) -> torch.Tensor:
    """Record per-channel mean/std in the VAE config; return the normalised latents."""
    dims = (0, 2, 3, 4)
    mean, std = latents.mean(dim=dims), latents.std(dim=dims).clamp_min(1e-4)
    vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean],
                           latents_std=[round(float(v), 5) for v in std])
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (latents - mean) / std


def train_transformer(pipe, cfg: TrainConfig, steps: int, latents: torch.Tensor, prompt_ids: torch.Tensor,
                      prompt_embeds: torch.Tensor, null_embed: torch.Tensor, clock: _Clock, progress: bool) -> dict:
    import copy

    model = pipe.transformer.train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.dit_lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    shift = float(pipe.scheduler.config.shift)
    losses, stopped = [], None
    bar = tqdm(range(steps), desc="transformer", unit="step", disable=not progress)
    for step in bar:
        if clock.over():
            stopped = step
            break
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(step, steps, cfg.dit_lr, warmup=50)
        idx = torch.randint(len(latents), (cfg.dit_batch,), generator=gen)
        x0 = latents[idx]
        embeds = prompt_embeds[prompt_ids[idx]].clone()
        drop = torch.rand(cfg.dit_batch, generator=gen) < cfg.cfg_dropout
        embeds[drop] = null_embed
        u = torch.rand(cfg.dit_batch, generator=gen)
        shifted = shift * u / (1 + (shift - 1) * u)
        t = torch.where(torch.rand(cfg.dit_batch, generator=gen) < 0.5, u, shifted)
        noise = torch.randn(x0.shape, generator=gen)
        tb = t.view(-1, 1, 1, 1, 1)
        xt = (1 - tb) * x0 + tb * noise
        pred = model(hidden_states=xt, timestep=t * 1000.0, encoder_hidden_states=embeds, return_dict=False)[0]
        loss = (pred - (noise - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    pipe.transformer.load_state_dict(ema.state_dict())
    pipe.transformer.eval()
    return {"steps": len(losses), "planned_steps": steps, "stopped_early_at": stopped,
            "final_loss": float(np.mean(losses[-50:])) if losses else None}


def quick_check(out_dir: Path, clips: int) -> dict:
    """Ground-truth metrics of the saved pipeline on ``clips`` held-out prompt/seed pairs (unguided)."""
    from demo_world.metrics import evaluate
    from guidance.demo import DEFAULT_SHAPE, DEFAULT_STEPS
    from guidance.families import load_pipeline
    from guidance.sampler import SampleSpec, sample

    family = load_pipeline(out_dir)
    prompts = world.eval_prompts()
    specs = [SampleSpec(prompts[i % len(prompts)].text, seed=world.EVAL_SEED_BASE + i) for i in range(clips)]
    frames = sample(family, specs, DEFAULT_SHAPE, DEFAULT_STEPS).frames
    scores = [evaluate(f, s.prompt) for f, s in zip(frames, specs)]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("vq", "mq", "ta")}


def _training_record(run_dir: Path) -> dict:
    """An earlier run's ``demo_training.json`` ({} when it has none)."""
    record = run_dir / "demo_training.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def train_demo(out_dir: str | Path, cfg: TrainConfig, progress: bool = True) -> dict:
    """Train the demo pipeline and save it to ``out_dir`` as a diffusers directory."""
    out = Path(out_dir)
    torch.set_num_threads(cfg.threads)
    clock = _Clock(cfg.minutes, cfg.overrun)
    vae_steps, dit_steps = cfg.resolved_steps()
    print(f"demo train: seed {cfg.seed}, budget {cfg.minutes} min, VAE {vae_steps} steps, "
          f"transformer {dit_steps} steps, {cfg.threads} threads", flush=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    pipe = build_demo_pipeline(cfg.seed, cfg.z_dim, cfg.vae_base_dim)
    summary: dict = {"config": {k: v for k, v in asdict(cfg).items() if k != "log"}}

    if cfg.transformer_from:
        if cfg.vae_from not in (None, cfg.transformer_from):
            raise ValueError("--transformer-from takes the VAE of the same run; drop --vae-from or make it the same")
        cfg.vae_from = summary["config"]["vae_from"] = cfg.transformer_from
    # The earlier run's record (the VAE's and the transformer's source are the same run).
    previous = _training_record(Path(cfg.vae_from)) if cfg.vae_from else {}
    if cfg.vae_from:
        from diffusers import AutoencoderKLWan

        source = Path(cfg.vae_from)
        pipe.vae = AutoencoderKLWan.from_pretrained(str(source / "vae"), use_safetensors=True).eval()
        pipe.register_modules(vae=pipe.vae)
        summary["vae"] = {**previous.get("vae", {}), "from": str(source)}
        print(f"VAE taken from {source}: {summary['vae']}", flush=True)
    else:
        summary["vae"] = train_vae(pipe, cfg, vae_steps, rng, clock, progress)
        summary["vae"]["minutes"] = round(clock.elapsed_min, 2)
        print(f"VAE done at {clock.elapsed_min:.1f} min: {summary['vae']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    pipe.vae.save_pretrained(str(out / "vae"), safe_serialization=True)  # inspectable while stage 2 runs

    # Stage 2 has its own generator, so it does not depend on how stage 1 was obtained.
    latents, prompt_ids, prompts = encode_clips(pipe, cfg, np.random.default_rng([cfg.seed, 8]), progress)
    latents = set_latent_stats(pipe.vae, latents)
    embeds, _ = pipe.encode_prompt(prompt=prompts, do_classifier_free_guidance=False, max_sequence_length=512)
    null, _ = pipe.encode_prompt(prompt=[""], do_classifier_free_guidance=False, max_sequence_length=512)
    print(f"encoded {len(latents)} clips at {clock.elapsed_min:.1f} min", flush=True)

    if cfg.transformer_from:
        from diffusers import WanTransformer3DModel

        source = Path(cfg.transformer_from)
        start = WanTransformer3DModel.from_pretrained(str(source / "transformer"), use_safetensors=True)
        pipe.transformer.load_state_dict(start.state_dict())
        summary["transformer_from"] = {**previous.get("transformer", {}), "from": str(source),
                                       **({"earlier": previous["transformer_from"]} if "transformer_from" in previous else {})}
        print(f"transformer starts from {source}: {summary['transformer_from']}", flush=True)
    summary["transformer"] = train_transformer(pipe, cfg, dit_steps, latents, prompt_ids, embeds.detach(),
                                               null[0].detach(), clock, progress)
    summary["transformer"]["minutes"] = round(clock.elapsed_min, 2)
    print(f"transformer done at {clock.elapsed_min:.1f} min: {summary['transformer']}", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    summary["train_minutes"] = round(clock.elapsed_min, 2)
    if cfg.check_clips:
        summary["heldout_check"] = {"clips": cfg.check_clips, **quick_check(out, cfg.check_clips)}
        print(f"held-out check ({cfg.check_clips} clips, unguided, default cfg): {summary['heldout_check']}", flush=True)
    summary["total_minutes"] = round(clock.elapsed_min, 2)
    summary["torch"] = torch.__version__
    summary["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    (out / "demo_training.json").write_text(json.dumps(summary, indent=2))
    return summary
