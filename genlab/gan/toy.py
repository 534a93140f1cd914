"""GANs on toy distributions, where everything can be seen: the lectures' ducks and cows (two clusters
on a line) and the ring of 8 Gaussians (Metz et al. 2017), with an animation of the generator's
distribution moving onto the data, the modes it covers over time, and the theory's -log 4.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from genlab import rundir
from genlab.data import save_gif
from genlab.errors import GenlabError
from genlab.gan.game import discriminator_outputs, discriminator_terms, frozen
from genlab.gan.losses import LOSSES
from genlab.gan.task import DCGAN_BETAS, PAPER_BETAS, PAPER_D_STEPS
from genlab.metrics.coverage import mode_coverage
from genlab.train.order import seed_step

TOY_DATA = ("ring", "ducks-cows")


@dataclass
class ToyData:
    """A Gaussian mixture with equal weights: ``centers`` (K, dim) and one ``std``."""

    name: str
    centers: torch.Tensor
    std: float

    @property
    def dim(self) -> int:
        return self.centers.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(0, len(self.centers), (n,), generator=generator)
        return self.centers[k] + self.std * torch.randn(n, self.dim, generator=generator)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """p(x) at points x (N, dim)."""
        d2 = ((x[:, None, :] - self.centers[None]) ** 2).sum(-1)
        norm = (2 * math.pi * self.std**2) ** (self.dim / 2)
        return torch.exp(-d2 / (2 * self.std**2)).mean(1) / norm


def toy_data(name: str, std: float | None = None) -> ToyData:
    """``ring``: 8 Gaussians of std 0.02 on the circle of radius 2 (Metz et al. 2017, section 3.1);
    ``ducks-cows``: two clusters on a line, ducks' and cows' standardised weights (std 0.3 at -1.5, +1.5)."""
    if name == "ring":
        angles = torch.arange(8) * (2 * math.pi / 8)
        return ToyData(name, 2.0 * torch.stack([angles.cos(), angles.sin()], 1), 0.02 if std is None else std)
    if name == "ducks-cows":
        return ToyData(name, torch.tensor([[-1.5], [1.5]]), 0.3 if std is None else std)
    raise GenlabError(f"unknown toy data '{name}'; choose one of {', '.join(TOY_DATA)}")


def modes_covered(samples: torch.Tensor, data: ToyData, min_share: float = 0.1) -> dict:
    """The modes the samples land on. A sample is *high quality* when it lies within 3 std of a centre
    (the criterion of Srivastava et al. 2017, VEEGAN, section 5.1); a mode is covered when it gets at least
    ``min_share`` of the uniform share of the high-quality samples (genlab.metrics.coverage)."""
    dist = torch.cdist(samples, data.centers)
    nearest, index = dist.min(1)
    good = nearest <= 3 * data.std
    k = len(data.centers)
    if not good.any():
        return {"modes_covered": 0, "num_modes": k, "high_quality": 0.0, "histogram": [0] * k}
    cover = mode_coverage(index[good], k, min_share)
    return {
        "modes_covered": cover["modes_covered"],
        "num_modes": k,
        "high_quality": float(good.float().mean()),
        "histogram": cover["histogram"],
    }


# --- the theory: V(D*, G) = -log 4 + 2 JSD(p_data || p_g) (Goodfellow et al. 2014, theorem 1) ----------


def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)) (Goodfellow et al. 2014, proposition 1)."""
    return p_data / (p_data + p_g).clamp_min(1e-300)


def value_function(p_data: torch.Tensor, p_g: torch.Tensor, d: torch.Tensor, dx: float) -> torch.Tensor:
    """V(D, G) = E_data log D(x) + E_g log(1 - D(x)) for densities on a grid of spacing dx (eq. 1),
    where 0 log 0 counts as 0."""
    a = torch.where(p_data > 0, p_data * torch.log(d.clamp_min(1e-300)), torch.zeros_like(p_data))
    b = torch.where(p_g > 0, p_g * torch.log((1 - d).clamp_min(1e-300)), torch.zeros_like(p_g))
    return (a.sum() + b.sum()) * dx


def jensen_shannon(p: torch.Tensor, q: torch.Tensor, dx: float) -> torch.Tensor:
    """JSD(p || q) = KL(p || m) / 2 + KL(q || m) / 2, m = (p + q) / 2, in nats."""
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * torch.log(a.clamp_min(1e-300) / m.clamp_min(1e-300)), 0.0).sum() * dx

    return (kl(p) + kl(q)) / 2


def theory_check(shifts: tuple[float, ...] = (0.0, 0.5, 1.0, 3.0), points: int = 20001) -> list[dict]:
    """V(D*, G) computed numerically on the ducks-and-cows density for generators that are the data
    shifted by each of ``shifts``: -log 4 at shift 0, and -log 4 + 2 JSD above it otherwise."""
    data = toy_data("ducks-cows")
    x = torch.linspace(-8.0, 8.0, points, dtype=torch.float64)[:, None]
    dx = float(x[1, 0] - x[0, 0])
    centers = data.centers.double()
    p = ToyData(data.name, centers, data.std).density(x)
    rows = []
    for s in shifts:
        q = ToyData("generator", centers + s, data.std).density(x)
        v = value_function(p, q, optimal_discriminator(p, q), dx)
        jsd = jensen_shannon(p, q, dx)
        rows.append(
            {
                "shift": s,
                "value": float(v),
                "minus_log4_plus_2jsd": float(-math.log(4) + 2 * jsd),
                "jsd": float(jsd),
            }
        )
    return rows


# --- training on a toy distribution --------------------------------------------------------------


@dataclass
class ToyConfig:
    data: str = "ring"
    loss: str = "ns"
    std: float | None = None  # of each mixture component; None: the data's (ring 0.02, ducks-cows 0.3)
    steps: int = 20000  # generator steps
    minutes: float | None = None  # stop early when this many minutes have passed
    batch_size: int = 256
    lr: float = 1e-4  # Gulrajani et al.'s toy code; at 1e-3 WGAN-GP's coverage oscillates (6 +- 2 modes)
    hidden: int = 256
    z_dim: int = 2
    d_steps: int = 0  # 0: the loss's paper's (5 for WGAN-GP, else 1)
    gp_weight: float = 0.1  # the ring's scale is ~2: a lambda of 10 (images) over-smooths the critic
    seed: int = 0
    frames: int = 60  # snapshots for the animation
    eval_samples: int = 2000

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise GenlabError(f"unknown GAN `loss` '{self.loss}'; choose one of {', '.join(LOSSES)}")
        toy_data(self.data)
        if self.steps < 1 or self.batch_size < 1 or self.frames < 1:
            raise GenlabError("`steps`, `batch_size` and `frames` must be at least 1")


@dataclass
class ToyResult:
    config: ToyConfig
    history: list[dict] = field(default_factory=list)  # per snapshot: step, seconds, losses, D(x), coverage
    snapshots: list[torch.Tensor] = field(default_factory=list)  # generated points at each snapshot
    critics: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # 1-D: (x grid, D(x))
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "history": self.history, "seconds": self.seconds}


def _players(cfg: ToyConfig, dim: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    from genlab.gan.models import mlp

    h = cfg.hidden
    return mlp([cfg.z_dim, h, h, dim]), mlp([dim, h, h, 1])


def train_toy(cfg: ToyConfig, progress: Callable[[dict], None] | None = None) -> ToyResult:
    """Train a small MLP GAN on ``cfg.data`` (Goodfellow et al. 2014, Algorithm 1), taking ``cfg.frames``
    snapshots of its samples (and, in 1-D, of D) and measuring the modes covered at each."""
    data = toy_data(cfg.data, cfg.std)
    seed_step(cfg.seed, -1)
    G, D = _players(cfg, data.dim)
    rule = LOSSES[cfg.loss]
    betas = PAPER_BETAS.get(cfg.loss, DCGAN_BETAS)
    k = cfg.d_steps or PAPER_D_STEPS.get(cfg.loss, 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=betas)

    def judge(x: torch.Tensor) -> torch.Tensor:
        return D(x).squeeze(1)

    g = torch.Generator().manual_seed(cfg.seed)
    fixed_z = torch.randn(cfg.eval_samples, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 1))
    grid = torch.linspace(-4, 4, 400)[:, None]
    every = max(1, cfg.steps // cfg.frames)
    result = ToyResult(cfg)
    last: dict[str, float] = {}  # the latest step's losses and D outputs
    deadline = time.perf_counter() + cfg.minutes * 60 if cfg.minutes else math.inf
    t0 = time.perf_counter()
    interval = cfg.minutes * 60 / cfg.frames if cfg.minutes else None  # a time budget: frames in time
    for step in range(cfg.steps + 1):
        elapsed = time.perf_counter() - t0
        due = step % every == 0 if interval is None else elapsed >= len(result.history) * interval
        if due or step == cfg.steps or time.perf_counter() > deadline:
            with torch.no_grad():
                points = G(fixed_z)
                record = {"step": step, "seconds": time.perf_counter() - t0, **modes_covered(points, data)}
                record.update(last)
                result.history.append(record)
                result.snapshots.append(points)
                if data.dim == 1:
                    out = D(grid).squeeze(1)
                    result.critics.append((grid[:, 0], torch.sigmoid(out) if rule.probabilistic else out))
            if progress is not None:
                progress(record)
            if step == cfg.steps or time.perf_counter() > deadline:
                break
        for _ in range(k):
            real = data.sample(cfg.batch_size, g)
            with torch.no_grad():
                fake = G(torch.randn(cfg.batch_size, cfg.z_dim, generator=g))
            d = discriminator_terms(judge, real, fake, rule, cfg.gp_weight, generator=g)
            opt_d.zero_grad(set_to_none=True)
            d.loss.backward()
            opt_d.step()
        with frozen(D):
            g_loss = rule.generator(judge(G(torch.randn(cfg.batch_size, cfg.z_dim, generator=g))))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
        opt_g.step()
        d_loss = d.loss
        last = {"d_loss": d_loss.item(), "g_loss": g_loss.item(), **discriminator_outputs(d, rule)}
        if not (torch.isfinite(d_loss) and torch.isfinite(g_loss)):
            raise GenlabError(
                f"the toy GAN's losses became non-finite at step {step}; lower `lr` (now {cfg.lr})"
            )
    result.seconds = time.perf_counter() - t0
    return result


# --- pictures --------------------------------------------------------------------------------


def render_frame(result: ToyResult, i: int) -> torch.Tensor:
    """Snapshot ``i`` as an image tensor (3, H, W): data and samples (2-D scatter, or 1-D histograms
    with D's curve, as in Goodfellow et al. 2014, figure 1)."""
    import numpy as np

    from genlab.metrics.plots import _figure

    cfg, rec = result.config, result.history[i]
    data = toy_data(cfg.data, cfg.std)
    real = data.sample(2000, torch.Generator().manual_seed(0))
    fake = result.snapshots[i]
    plt, fig = _figure(4.0, 4.0 if data.dim == 2 else 3.0)
    ax = fig.subplots()
    if data.dim == 2:
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.6", label="data")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, c="tab:red", alpha=0.5, label="generator")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
    else:
        bins = np.linspace(-4, 4, 81)
        ax.hist(real[:, 0].numpy(), bins=bins, density=True, color="0.6", label="data (ducks, cows)")
        ax.hist(
            fake[:, 0].clamp(-4, 4).numpy(),
            bins=bins,
            density=True,
            color="tab:red",
            alpha=0.5,
            label="generator",
        )
        if result.critics:
            x, d = result.critics[i]
            twin = ax.twinx()
            twin.plot(x.numpy(), d.numpy(), c="tab:blue", lw=1.5, label="D(x)")
            if LOSSES[cfg.loss].probabilistic:
                twin.set_ylim(0, 1)
            twin.set_ylabel("D(x)", color="tab:blue")
        ax.set_xlim(-4, 4)
    ax.set_title(
        f"{cfg.loss} step {rec['step']}: {rec['modes_covered']}/{rec['num_modes']} modes", fontsize=9
    )
    ax.legend(fontsize=7, loc="upper left", markerscale=4)
    fig.tight_layout()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0


def plot_history(result: ToyResult, path) -> None:
    """Modes covered and the two losses against step."""
    from genlab.metrics.plots import _figure, _save

    hist = result.history
    plt, fig = _figure(6.4, 3.2)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([r["step"] for r in hist], [r["modes_covered"] for r in hist], marker=".")
    ax1.set_ylim(0, hist[0]["num_modes"] + 0.5)
    ax1.set_xlabel("generator step")
    ax1.set_ylabel("modes covered")
    rest = [r for r in hist if "d_loss" in r]
    ax2.plot([r["step"] for r in rest], [r["d_loss"] for r in rest], label="D loss")
    ax2.plot([r["step"] for r in rest], [r["g_loss"] for r in rest], label="G loss")
    ax2.set_xlabel("generator step")
    ax2.legend(fontsize=8)
    _save(plt, fig, path)


def save_toy_run(result: ToyResult, folder: str | Path) -> tuple[Path, Path]:
    """Write a toy run into ``folder``: the animation of every snapshot (training.gif), the modes and
    losses against step (history.png) and the history itself (history.json); returns the GIF's and the
    plot's paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gif = save_gif(
        folder / "training.gif", [render_frame(result, i)[None] for i in range(len(result.history))]
    )
    plot = folder / "history.png"
    plot_history(result, plot)
    rundir.atomic_write_json(folder / "history.json", result.to_dict())
    return gif, plot
