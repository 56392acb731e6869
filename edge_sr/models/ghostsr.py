"""GhostSR (Nie et al., 2021): half the features from cheap shifts of the other half."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# The 9 shift directions (dy, dx) of a 3x3 one-hot depthwise kernel; index 4 is identity.
SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
IDENTITY = 4


def shift2d(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift a feature map by (dy, dx) pixels with zero fill, as pad + slice.

    Equals a depthwise conv with a one-hot 3x3 kernel, without the multiply-adds.
    """
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    x = F.pad(x, (1, 1, 1, 1))
    return x[..., 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]


class _ChosenShift(torch.autograd.Function):
    """``sum_j w_j * shift_j(x)`` for straight-through one-hot ``w`` (value 1 at ``k``).

    The forward applies the one chosen shift; the backward gives every weight its
    gradient ``<g, shift_j(x)>`` without keeping nine shifted copies for autograd
    (GhostSR trained about 1.5x faster than with the nine-term sum).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(x, weights)
        ctx.k = k
        return shift2d(x, *SHIFTS[k]) * weights[k]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weights = ctx.saved_tensors
        dy, dx = SHIFTS[ctx.k]
        grad_x = shift2d(grad, -dy, -dx) * weights[ctx.k]  # a shift's adjoint shifts back
        grad_w = torch.stack([(grad * shift2d(x, a, b)).sum() for a, b in SHIFTS])
        return grad_x, grad_w.to(weights.dtype), None


class GhostModule(nn.Module):
    """A ghost conv: ``cout // 2`` intrinsic maps from a 3x3 conv, the rest shifted copies.

    Training uses what is deployed: a straight-through hard Gumbel-softmax, so the
    forward pass applies exactly one shift (one-hot weights) while gradients flow
    through the soft probabilities at temperature ``tau``. ``anneal`` lowers the
    temperature and the Gumbel noise; with the noise at zero the training forward picks
    the argmax direction, the same shift as eval mode and the deploy form (a soft blend
    of the nine shifts, trained and then replaced by its argmax, lost about 0.3 dB).

    Args:
        cin: Input channels.
        cout: Output channels (even).
        tau: Gumbel-softmax temperature used in training.
    """

    def __init__(self, cin: int, cout: int, tau: float = 1.0):
        super().__init__()
        self.primary = nn.Conv2d(cin, cout // 2, 3, padding=1)
        self.logits = nn.Parameter(torch.zeros(len(SHIFTS)))
        self.tau = tau
        self.noise = 1.0  # scale of the Gumbel noise; 0 = deterministic argmax
        # Optional output gather (plain channel -> ghost slot), set by ghost_from_plain.
        self.register_buffer("gather", None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # A converted module (ghost_from_plain) carries its output gather: a fresh one
        # (gather None, not in its own state dict) takes it from the checkpoint.
        gather = state_dict.get(prefix + "gather")
        if gather is not None and self.gather is None:
            self.gather = torch.empty_like(gather)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def shift_weights(self) -> torch.Tensor:
        """Training-time weights of the 9 shifts: one-hot forward, soft backward."""
        scores = self.logits
        if self.noise:
            u = torch.rand_like(scores).clamp_(1e-10, 1 - 1e-10)
            scores = scores - self.noise * torch.log(-torch.log(u))
        soft = torch.softmax(scores / self.tau, dim=0)
        hard = F.one_hot(scores.argmax(), len(SHIFTS)).to(soft.dtype)
        return hard - soft.detach() + soft

    @property
    def direction(self) -> tuple[int, int]:
        """The inference-time shift (dy, dx)."""
        return SHIFTS[int(self.logits.argmax())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary(x)
        if self.training:
            weights = self.shift_weights()
            ghost = _ChosenShift.apply(intrinsic, weights, int(weights.detach().argmax()))
        else:
            ghost = shift2d(intrinsic, *self.direction)
        y = torch.cat([intrinsic, ghost], dim=1)
        if self.gather is not None:
            y = y.index_select(1, self.gather)
        return y


class FixedGhost(nn.Module):
    """Deploy form of a GhostModule: conv, then a fixed pad/slice shift."""

    def __init__(self, module: GhostModule):
        super().__init__()
        self.primary = copy.deepcopy(module.primary)
        self.dy, self.dx = module.direction
        self.register_buffer("gather", None if module.gather is None else module.gather.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        intrinsic = self.primary(x)
        y = torch.cat([intrinsic, shift2d(intrinsic, self.dy, self.dx)], dim=1)
        if self.gather is not None:
            y = y.index_select(1, self.gather)
        return y


class ResBlock(nn.Module):
    """EDSR residual block (conv-ReLU-conv + identity, no batch-norm)."""

    def __init__(self, conv1: nn.Module, conv2: nn.Module):
        super().__init__()
        self.conv1, self.act, self.conv2 = conv1, nn.ReLU(), conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class GhostSR(nn.Module):
    """An EDSR-lite backbone on Y whose body convs are ghost modules (or plain convs).

    Args:
        scale: Upscaling factor.
        blocks: Residual blocks.
        channels: Feature channels.
        ghost: Use ghost modules in the body (``False`` gives the plain EDSR-lite
            model that ``ghost_from_plain`` converts).
    """

    def __init__(self, scale: int, blocks: int = 8, channels: int = 32, ghost: bool = True):
        super().__init__()
        self.scale = scale

        def conv() -> nn.Module:
            if ghost:
                return GhostModule(channels, channels)
            return nn.Conv2d(channels, channels, 3, padding=1)

        self.head = nn.Conv2d(1, channels, 3, padding=1)
        self.body = nn.Sequential(*(ResBlock(conv(), conv()) for _ in range(blocks)))
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        f = f + self.body_tail(self.body(f))
        # Nearest-neighbour residual of the input, as in ECBSR: the net learns detail only.
        return self.shuffle(self.tail(f) + x)

    def anneal(self, progress: float) -> None:
        """Set every ghost module's temperature and noise for training progress in [0, 1].

        The temperature falls geometrically from 1 to 0.05 and the Gumbel noise linearly
        to zero at 80% of the schedule: the last fifth trains the deployed shifts only.
        """
        progress = min(max(progress, 0.0), 1.0)
        for mod in self.modules():
            if isinstance(mod, GhostModule):
                mod.tau = 0.05 ** progress
                mod.noise = max(0.0, 1.0 - progress / 0.8)

    def deploy(self) -> GhostSR:
        """Return a copy whose ghost modules use their fixed (argmax) shift."""
        out = copy.deepcopy(self).eval()
        for block in out.body:
            for name in ("conv1", "conv2"):
                mod = getattr(block, name)
                if isinstance(mod, GhostModule):
                    setattr(block, name, FixedGhost(mod))
        return out


def _kmeans_representatives(filters: torch.Tensor, k: int, iters: int = 50,
                            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster flattened filters; return (cluster of each filter, representative per cluster).

    The representative is the real filter nearest its centroid, so the ghost model keeps
    trained weights rather than averages.
    """
    gen = torch.Generator().manual_seed(seed)
    flat = filters.flatten(1)
    # Farthest-point initialization: distinct filters seed distinct clusters, so exact
    # duplicates can never leave a cluster empty (random seeding can).
    chosen = [int(torch.randint(len(flat), (1,), generator=gen))]
    for _ in range(k - 1):
        chosen.append(int(torch.cdist(flat, flat[chosen]).min(1).values.argmax()))
    centroids = flat[chosen].clone()
    for _ in range(iters):
        assign = torch.cdist(flat, centroids).argmin(1)
        for j in range(k):
            members = flat[assign == j]
            if len(members):
                centroids[j] = members.mean(0)
    assign = torch.cdist(flat, centroids).argmin(1)
    reps = torch.empty(k, dtype=torch.long)
    for j in range(k):
        members = (assign == j).nonzero().flatten()
        if len(members) == 0:  # empty cluster: any filter, its slot goes unused
            reps[j] = 0
            continue
        dist = (flat[members] - centroids[j]).norm(dim=1)
        reps[j] = members[dist.argmin()]
    return assign, reps


def _ghost_from_conv(conv: nn.Conv2d) -> GhostModule:
    k = conv.out_channels // 2
    assign, reps = _kmeans_representatives(conv.weight.detach(), k)
    ghost = GhostModule(conv.in_channels, conv.out_channels)
    ghost.primary.weight.data.copy_(conv.weight.data[reps])
    ghost.primary.bias.data.copy_(conv.bias.data[reps])
    # Start every shift at identity: each plain channel is approximated by its cluster's
    # representative (its intrinsic slot if it is one, else the ghost copy of it).
    ghost.logits.data.fill_(-4.0)
    ghost.logits.data[IDENTITY] = 4.0
    is_rep = torch.zeros(conv.out_channels, dtype=torch.bool)
    is_rep[reps] = True
    gather = torch.where(is_rep, assign, assign + k)
    gather[reps] = torch.arange(k)
    ghost.gather = gather
    return ghost


def ghost_from_plain(plain: GhostSR) -> GhostSR:
    """Build a GhostSR from a trained plain EDSR-lite by k-means over each conv's filters.

    Each body conv's filters are clustered into ``cout // 2`` groups; the filter nearest
    each centroid becomes an intrinsic filter, and every other filter is replaced by a
    (initially unshifted) ghost of its representative. Fine-tune afterwards to learn the
    shifts. A plain model whose filters come in identical pairs converts exactly.

    Args:
        plain: A ``GhostSR(..., ghost=False)`` model.

    Returns:
        A new ghost model with the plain model's head and tail.
    """
    out = copy.deepcopy(plain)
    for block in out.body:
        for name in ("conv1", "conv2"):
            mod = getattr(block, name)
            if not isinstance(mod, nn.Conv2d):
                raise ValueError("ghost_from_plain expects a plain model (ghost=False)")
            setattr(block, name, _ghost_from_conv(mod))
    return out
