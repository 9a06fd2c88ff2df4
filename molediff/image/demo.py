"""``molediff image-demo``: train the small U-Net on 8x8 digits and write a PNG grid of samples.

This checks the shared DDPM core (:class:`~molediff.diffusion.schedule.NoiseSchedule`,
:func:`~molediff.diffusion.losses.epsilon_loss` and the samplers) end to end in a domain where the
result is easy to judge by eye. The data is scikit-learn's bundled digits (1797 images, 8x8, grey
levels 0..16; no download), scaled to [-1, 1].

The pieces are plain functions so tests and notebooks can use them without the CLI::

    x = load_digits_tensor()                       # [1797, 1, 8, 8] in [-1, 1]
    schedule = NoiseSchedule.linear(1000)
    model = train_unet(x, schedule, max_steps=2000)
    samples = sample_digits(model, schedule, 64)   # [64, 1, 8, 8] in [-1, 1]
    save_grid(samples, "digits.png")

With ``--steps`` (or ``max_steps``) and a fixed ``--seed`` the run is deterministic; with
``--minutes`` the number of training steps depends on the machine's speed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

from molediff.diffusion.losses import epsilon_loss
from molediff.ema import EMA
from molediff.diffusion.samplers import ddim_sample, ddpm_sample
from molediff.diffusion.schedule import NoiseSchedule
from molediff.errors import UserError
from molediff.image.unet import UNet

#: grey levels of sklearn's digits run from 0 to 16
DIGITS_MAX = 16.0

#: the demo's U-Net: ``UNet()`` at half width and without attention (160 k parameters). In a fixed
#: CPU budget of ~1.5 minutes, more steps of this one beat fewer steps of wider or deeper variants
#: (base 32; base 16 with levels 1,2,4), judged by how many samples a digit classifier recognises;
#: attention at 4x4 made no measurable difference per step but cost ~30 % more time per step.
DEMO_UNET = dict(in_channels=1, base_channels=16, channel_mults=(1, 2), attention_at_lowest=False)


# ---------------------------------------------------------------------------------------- data
def load_digits_tensor(return_labels: bool = False):
    """scikit-learn's 8x8 digits as a float32 tensor ``[1797, 1, 8, 8]`` scaled from 0..16 to [-1, 1].

    With ``return_labels=True`` returns ``(images, labels)`` with labels a LongTensor ``[1797]``.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / (DIGITS_MAX / 2) - 1.0
    if return_labels:
        return x, torch.as_tensor(d.target, dtype=torch.long)
    return x


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Map images in [-1, 1] back to the dataset's grey levels 0..16 (clipped), same shape."""
    return ((x.clamp(-1.0, 1.0) + 1.0) * (DIGITS_MAX / 2)).to(torch.float32)


# ---------------------------------------------------------------------------------------- training
def train_unet(
    data: torch.Tensor,
    schedule: NoiseSchedule,
    model: UNet | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    ema_decay: float = 0.995,
    warmup_steps: int = 100,
    seed: int = 0,
    progress: bool = True,
    log: list | None = None,
) -> UNet:
    """Train an ε-predicting U-Net on ``data`` (``[N, C, H, W]`` in [-1, 1]); returns the EMA model.

    Training stops after ``max_steps`` optimiser steps or ``max_seconds`` of wall time, whichever
    comes first (``None`` = no limit of that kind; with neither given, 90 s). Only a step limit
    alone makes a run reproducible. ``model`` defaults to ``UNet(**DEMO_UNET)`` seeded by ``seed``.

    Each step draws a batch with replacement, a uniform timestep per image and fresh noise, and
    minimises :func:`epsilon_loss` with AdamW: linear warm-up over ``warmup_steps``, constant, then a
    cosine decay to 10 % over the last 30 % of the budget (steps or seconds, whichever runs out
    first). ``log``, if given, receives ``(step, loss)`` per step. Returns the EMA copy in eval mode,
    with ``train_steps`` and ``train_seconds`` attributes.
    """
    if max_steps is None and max_seconds is None:
        max_seconds = 90.0
    _check_budget(data, max_steps, max_seconds)
    gen = torch.Generator().manual_seed(seed)
    if model is None:
        torch.manual_seed(seed)
        model = UNet(**{**DEMO_UNET, "in_channels": data.shape[1]})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = EMA(model, ema_decay)
    n = len(data)
    batch_size = min(batch_size, n) if batch_size > 0 else n
    bar = _progress_bar(max_steps, max_seconds, progress)
    start = time.perf_counter()
    step = 0
    ema_loss = None
    while True:
        elapsed = time.perf_counter() - start
        frac = max(step / max_steps if max_steps is not None else 0.0,
                   elapsed / max_seconds if max_seconds is not None else 0.0)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(lr, warmup_steps, step, frac)
        value = _train_step(model, opt, ema, schedule, data[torch.randint(0, n, (batch_size,), generator=gen)], gen)
        step += 1
        ema_loss = value if ema_loss is None else 0.98 * ema_loss + 0.02 * value
        if log is not None:
            log.append((step, value))
        if max_steps is not None:
            bar.update(1)
        else:
            bar.n = min(round(max_seconds), time.perf_counter() - start)
        if step % 10 == 0 or step == max_steps:
            bar.set_postfix(step=step, loss=f"{ema_loss:.4f}", refresh=False)
            bar.refresh()
    bar.close()
    ema.model.train_steps = step  # for reporting
    ema.model.train_seconds = time.perf_counter() - start
    return ema.model


def _check_budget(data: torch.Tensor, max_steps: int | None, max_seconds: float | None) -> None:
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if max_seconds is not None and max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
    if data.ndim != 4 or len(data) == 0:
        raise ValueError(f"data must be a non-empty [N, C, H, W] tensor, got shape {tuple(data.shape)}")


def _lr_at(lr: float, warmup_steps: int, step: int, frac: float) -> float:
    """Warm-up over ``warmup_steps``, then constant, cosine decay to 10 % over the last 30 % of training
    (``frac``: the share of the budget used)."""
    w = min(1.0, (step + 1) / max(1, warmup_steps))
    decay = 1.0 if frac < 0.7 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (frac - 0.7) / 0.3))
    return lr * w * decay


def _progress_bar(max_steps: int | None, max_seconds: float | None, progress: bool):
    """A bar over the steps, or over the seconds of a time budget."""
    from tqdm.auto import tqdm

    if max_steps is not None:
        return tqdm(total=max_steps, desc="training", unit="step", disable=not progress, file=sys.stderr)
    return tqdm(total=round(max_seconds), desc="training", unit="s", disable=not progress, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s{postfix}")


def _train_step(model: UNet, opt: torch.optim.Optimizer, ema: EMA, schedule: NoiseSchedule, x0: torch.Tensor,
                gen: torch.Generator) -> float:
    """One optimiser step on the batch ``x0``: a uniform timestep per image and fresh noise from ``gen``,
    ε-MSE, gradient clipping, EMA update; returns the loss."""
    t = schedule.sample_timesteps(len(x0), generator=gen)
    x_t, noise = schedule.q_sample(x0, t, generator=gen)
    loss = epsilon_loss(model(x_t, t), noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    ema.update(model)
    return loss.item()


# ---------------------------------------------------------------------------------------- sampling
def clip_x0(model: torch.nn.Module, schedule: NoiseSchedule, lo: float = -1.0, hi: float = 1.0):
    """Wrap an ε-model so its implied x̂_0 is clamped to the data range ``[lo, hi]``.

    Returns ``f(x_t, t) -> ε'`` with ε' = ε̂(x_t, clamp(x̂_0(x_t, ε̂))), so any sampler of the core that
    takes an ε-model steps towards a clamped x̂_0 (diffusers' ``clip_sample=True``). Pixels live in
    [-1, 1], so this only removes impossible predictions, which helps briefly trained models.
    """

    def clipped(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = model(x_t, t)
        x0 = schedule.predict_x0_from_eps(x_t, t, eps).clamp(lo, hi)
        return schedule.predict_eps_from_x0(x_t, t, x0)

    return clipped


@torch.no_grad()
def sample_digits(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    n: int = 64,
    sampler: str = "ddim",
    num_steps: int = 100,
    eta: float = 0.0,
    seed: int = 0,
    image_shape: tuple[int, int, int] = (1, 8, 8),
    clip: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Draw ``n`` images ``[n, *image_shape]`` with DDIM (``num_steps`` strided steps, ``eta``) or
    ancestral DDPM over all T steps (``sampler="ddpm"``); returns them clamped to [-1, 1].

    ``clip`` clamps the predicted x̂_0 to [-1, 1] at every step (see :func:`clip_x0`).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    x_T = torch.randn((n, *image_shape), generator=gen).to(device)
    total = schedule.num_train_timesteps if sampler == "ddpm" else num_steps
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=f"sampling ({sampler})", unit="step", disable=not progress, file=sys.stderr)
    cb = lambda i, t, x: bar.update(1)  # noqa: E731
    eps_model = clip_x0(model, schedule) if clip else model
    try:
        if sampler == "ddpm":
            x = ddpm_sample(eps_model, x_T, schedule, generator=gen, callback=cb)
        elif sampler == "ddim":
            x = ddim_sample(eps_model, x_T, schedule, num_steps=num_steps, eta=eta, generator=gen, callback=cb)
        else:
            raise ValueError(f"unknown sampler {sampler!r}; choose ddim or ddpm")
    finally:
        bar.close()
        model.train(was_training)
    return x.clamp(-1.0, 1.0).cpu()


# ---------------------------------------------------------------------------------------- output
def make_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 1, pad_value: float = -1.0) -> torch.Tensor:
    """Tile ``[n, 1, H, W]`` (or ``[n, H, W]``) images into one ``[rows·(H+pad)+pad, ncol·(W+pad)+pad]`` array."""
    if images.ndim == 4:
        images = images[:, 0]
    n, H, W = images.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    grid = torch.full((nrow * (H + pad) + pad, ncol * (W + pad) + pad), pad_value, dtype=torch.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        grid[y : y + H, x : x + W] = images[i].float()
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncol: int | None = None, title: str | None = None) -> Path:
    """Write images in [-1, 1] (``[n, 1, H, W]``) as a PNG grid (dark ink on white, like the dataset's plots)."""
    # a bare Figure on an Agg canvas: no pyplot, no global backend switch, works headless
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = make_grid(images.detach().cpu(), ncol=ncol, pad_value=-1.0)
    h, w = grid.shape
    scale = 0.08  # inches per pixel cell
    fig = Figure(figsize=(max(2.0, w * scale), max(2.0, h * scale) + (0.35 if title else 0.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1) if not title else (0, 0, 1, h * scale / (h * scale + 0.35)))
    ax.imshow(grid.numpy(), cmap="gray_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9, y=0.99)
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def save_model(model: UNet, schedule: NoiseSchedule, path: str | os.PathLike) -> None:
    """Save the U-Net's weights, its constructor arguments and the schedule's name and T."""
    torch.save(
        {
            "kind": "molediff.image.UNet",
            "config": dict(model.config),
            "state_dict": model.state_dict(),
            "schedule": schedule.name,
            "num_timesteps": schedule.num_train_timesteps,
        },
        path,
    )


def load_model(path: str | os.PathLike) -> tuple[UNet, NoiseSchedule]:
    """Inverse of :func:`save_model`: returns ``(model in eval mode, schedule)``."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "molediff.image.UNet":
            raise ValueError("not an image-demo checkpoint")
        cfg = dict(ckpt["config"])
        cfg["channel_mults"] = tuple(cfg["channel_mults"])
        model = UNet(**cfg)
        model.load_state_dict(ckpt["state_dict"])
        schedule = NoiseSchedule.from_name(ckpt["schedule"], ckpt["num_timesteps"])
    except FileNotFoundError:
        raise UserError(f"model file not found: {path}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot load image-demo model from {path}: {exc}") from None
    return model.eval(), schedule


# ---------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--minutes", type=float, default=1.5, help="training time budget in minutes (default: 1.5)")
    g.add_argument("--steps", type=int, default=None,
                   help="train for exactly this many optimiser steps instead of --minutes (deterministic with --seed)")
    g.add_argument("--batch-size", type=int, default=128, help="images per training step (default: 128)")
    g.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (default: 2e-3)")
    g.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the weights used for sampling (default: 0.995)")
    g.add_argument("--schedule", choices=["linear", "cosine"], default="linear", help="noise schedule (default: linear)")
    g.add_argument("--timesteps", type=int, default=1000, help="number of diffusion steps T (default: 1000)")
    g.add_argument("--base-channels", type=int, default=DEMO_UNET["base_channels"],
                   help=f"U-Net width at full resolution (default: {DEMO_UNET['base_channels']})")
    g.add_argument("--channel-mults", default=",".join(map(str, DEMO_UNET["channel_mults"])),
                   help="comma-separated width multiplier per resolution level; 8x8 images allow at most 4 levels "
                        f"(default: {','.join(map(str, DEMO_UNET['channel_mults']))})")
    g.add_argument("--save-model", metavar="PATH", default=None, help="also save the trained (EMA) U-Net here")
    g.add_argument("--load-model", metavar="PATH", default=None,
                   help="skip training and sample from a U-Net saved with --save-model")
    s = parser.add_argument_group("sampling")
    s.add_argument("--n", type=int, default=64, help="number of digits to sample (default: 64)")
    s.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim",
                   help="ddim: --sample-steps strided steps; ddpm: ancestral sampling over all T steps (default: ddim)")
    s.add_argument("--sample-steps", type=int, default=100, help="DDIM steps (default: 100; ignored for --sampler ddpm)")
    s.add_argument("--eta", type=float, default=1.0,
                   help="DDIM η: 0 deterministic, 1 DDPM-like noise, which forgives a briefly trained model's errors "
                        "(default: 1)")
    s.add_argument("--out", default="digits.png", help="PNG file for the grid of samples (default: digits.png)")
    o = parser.add_argument_group("other")
    o.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    o.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1; the tensors are tiny, and on a busy machine two threads "
                        "were measured 3-50x slower than one)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def _check_writable(path: str, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {path!r} is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {what} {path!r}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UserError(f"cannot write {what} {path!r}: permission denied")


def _validate(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if not (args.minutes > 0 and math.isfinite(args.minutes)):
        raise UserError(f"--minutes must be a positive number, got {args.minutes}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UserError(f"--lr must be a positive number, got {args.lr}")
    if not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.timesteps < 2:
        raise UserError(f"--timesteps must be at least 2, got {args.timesteps}")
    if args.base_channels < 1:
        raise UserError(f"--base-channels must be at least 1, got {args.base_channels}")
    try:
        args.channel_mults = tuple(int(m) for m in str(args.channel_mults).split(","))
    except ValueError:
        raise UserError(f"--channel-mults must be comma-separated integers like 1,2,4, got {args.channel_mults!r}") from None
    if not 1 <= len(args.channel_mults) <= 4 or min(args.channel_mults) < 1:
        raise UserError(f"--channel-mults needs 1 to 4 positive integers for 8x8 images, got {args.channel_mults}")
    if args.sampler == "ddim" and not 1 <= args.sample_steps <= args.timesteps:
        raise UserError(f"--sample-steps must be between 1 and --timesteps ({args.timesteps}), got {args.sample_steps}")
    if not 0 <= args.eta <= 1:
        raise UserError(f"--eta must be between 0 and 1, got {args.eta}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    _check_writable(args.out, "output file")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out must be a .png file, got {args.out!r}")
    if args.save_model:
        _check_writable(args.save_model, "model file")
    if args.load_model and not Path(args.load_model).is_file():
        raise UserError(f"--load-model: file not found: {args.load_model}")


def run(args: argparse.Namespace) -> int:
    _validate(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))  # noqa: E731

    if args.load_model:
        model, schedule = load_model(args.load_model)
        if args.sampler == "ddim" and args.sample_steps > schedule.num_train_timesteps:
            raise UserError(f"--sample-steps must be at most the model's T = {schedule.num_train_timesteps}")
        say(f"loaded {args.load_model} ({schedule})")
        info = "loaded model"
    else:
        schedule = NoiseSchedule.from_name(args.schedule, args.timesteps)
        data = load_digits_tensor()
        torch.manual_seed(args.seed)
        model = UNet(**{**DEMO_UNET, "base_channels": args.base_channels, "channel_mults": args.channel_mults})
        n_params = sum(p.numel() for p in model.parameters())
        budget = f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} min"
        say(f"training a {n_params / 1e3:.0f}k-parameter U-Net on {len(data)} digits ({schedule}, {budget})")
        model = train_unet(
            data, schedule, model=model,
            max_steps=args.steps, max_seconds=None if args.steps is not None else 60.0 * args.minutes,
            batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay, seed=args.seed,
            progress=not args.quiet,
        )
        info = f"{model.train_steps} steps in {model.train_seconds:.0f}s"
        say(f"trained {info}")
        if args.save_model:
            save_model(model, schedule, args.save_model)
            say(f"saved the U-Net to {args.save_model}")

    how = "DDPM, all T steps" if args.sampler == "ddpm" else f"DDIM, {args.sample_steps} steps, eta={args.eta:g}"
    samples = sample_digits(
        model, schedule, args.n, sampler=args.sampler, num_steps=args.sample_steps, eta=args.eta,
        seed=args.seed, progress=not args.quiet,
    )
    try:
        save_grid(samples, args.out, title=f"{args.n} samples ({schedule.name}, {how}; {info})")
    except OSError as exc:
        raise UserError(f"cannot write {args.out}: {exc}") from None
    print(f"wrote {args.n} samples to {args.out}")
    return 0
