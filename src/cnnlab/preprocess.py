"""Input scaling fitted on the training split, and augmentation on batched tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.config import Preprocess


@dataclass
class Scaler:
    """Per-channel standardization and optional ZCA whitening, fitted on training images."""

    mean: torch.Tensor  # [C, 1, 1], in units of pixel/255
    std: torch.Tensor  # [C, 1, 1]
    zca: torch.Tensor | None = None  # [D, D] with D = C*H*W

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Map uint8 images [N, C, H, W] to float32 inputs."""
        x = images.float().div_(255.0)
        x = (x - self.mean) / self.std
        if self.zca is not None:
            n = x.shape[0]
            x = (x.reshape(n, -1) @ self.zca).reshape(x.shape)
        return x


def fit_scaler(train_images: torch.Tensor, pre: Preprocess, *, zca_epsilon: float = 1e-2) -> Scaler:
    """Fit the scaler on the training split only, so validation and test stay unseen."""
    channels = train_images.shape[1]
    if pre.standardize:
        x = train_images.float().div(255.0)
        mean = x.mean(dim=(0, 2, 3)).reshape(channels, 1, 1)
        std = x.std(dim=(0, 2, 3)).reshape(channels, 1, 1).clamp_min(1e-6)
    else:
        # Without standardization inputs are only scaled to [0, 1].
        mean = torch.zeros(channels, 1, 1)
        std = torch.ones(channels, 1, 1)
    scaler = Scaler(mean, std)
    if pre.whiten:
        # ZCA: rotate to the principal axes, equalise their variance, rotate back.
        # epsilon keeps near-zero-variance directions (pixel noise) from exploding.
        sample = scaler(train_images[:20_000]).reshape(min(20_000, len(train_images)), -1).double()
        sample -= sample.mean(dim=0)
        cov = sample.T @ sample / (sample.shape[0] - 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        scale = (eigenvalues.clamp_min(0) + zca_epsilon).rsqrt()
        scaler.zca = ((eigenvectors * scale) @ eigenvectors.T).float()
    return scaler


def augment(
    x: torch.Tensor,
    pre: Preprocess,
    generator: torch.Generator,
    *,
    background: float = 0.0,
    flip_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the training-time augmentations of ``pre`` to a batch [N, C, H, W].

    Every image gets its own random shift, flip and cutout, drawn from
    ``generator`` so that a run is reproducible from its seed. ``flip_mask``
    (bool [N]) chooses the flipped images instead of a random draw. The draws
    come from the CPU generator on any device, so a batch on a GPU gets the same
    shifts, flips and cutouts as on the CPU.
    """
    n, _, height, width = x.shape
    if pre.translate > 0:
        x = _random_crop(F.pad(x, [pre.translate] * 4, value=background), height, width, generator)
    if pre.crop_padding > 0:
        x = _random_crop(F.pad(x, [pre.crop_padding] * 4, mode="reflect"), height, width, generator)
    if pre.flip:
        flip = torch.rand(n, generator=generator) < 0.5 if flip_mask is None else flip_mask
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    if pre.cutout > 0:
        x = _cutout(x, pre.cutout, generator)
    return x


def _random_crop(
    padded: torch.Tensor, height: int, width: int, generator: torch.Generator
) -> torch.Tensor:
    n, channels, padded_h, padded_w = padded.shape
    device = padded.device
    top = torch.randint(0, padded_h - height + 1, (n,), generator=generator).to(device)
    left = torch.randint(0, padded_w - width + 1, (n,), generator=generator).to(device)
    rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]  # [N, 1, H, 1]
    cols = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=device)[:, None, None, None]
    chan = torch.arange(channels, device=device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def _cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = x.shape
    # The square's centre may lie anywhere, so near an edge part of it falls outside.
    device = x.device
    cy = torch.randint(0, height, (n,), generator=generator).to(device)
    cx = torch.randint(0, width, (n,), generator=generator).to(device)
    ys = torch.arange(height, device=device)[None, :]
    xs = torch.arange(width, device=device)[None, :]
    inside_y = (ys >= (cy - size // 2)[:, None]) & (ys < (cy - size // 2 + size)[:, None])
    inside_x = (xs >= (cx - size // 2)[:, None]) & (xs < (cx - size // 2 + size)[:, None])
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # [N, H, W]
    return x.masked_fill(mask[:, None], 0.0)
