"""One training run: a function of its RunConfig and the data alone.

The run checkpoints after every epoch, so an interrupted run resumes from its
last finished epoch with the same optimizer, schedule and random state, and
ends with the same numbers as an uninterrupted run on the same CPU.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import platform
import sys
import time
import typing
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import cnnlab
from cnnlab.config import RunConfig, TrainConfig, to_dict
from cnnlab.data import DatasetSplits
from cnnlab.models import (
    CNN,
    build_model,
    conv_filters,
    layer_table,
    norm_biases,
    penalized_weights,
)
from cnnlab.optim import Muon
from cnnlab.preprocess import Scaler, augment, fit_scaler
from cnnlab.store import atomic_torch_save

log = logging.getLogger(__name__)

EVAL_BATCH = 1000
TRAIN_EVAL_IMAGES = 10_000  # train_clean_accuracy is measured on this many training images
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
HIST_BINS = 50
# A cross-entropy this many times that of uniform guessing (ln of the class count)
# means the weights have blown up even if the float is still finite.
DIVERGENCE_FACTOR = 100.0
WHITEN_IMAGES = 5000  # training images whose patches set the whitening stem
# Steps between divergence checks. Reading the loss back makes a GPU wait for its queued
# work, so a GPU checks every 25 steps. The CPU checks every step, so it stops a diverging
# run before its first bad update.
# NOTE: the GPU path (every device but the CPU) has not run on a GPU yet.
SYNC_STEPS = {"cpu": 1}
GPU_SYNC_STEPS = 25
LOOKAHEAD_DECAY = 0.95  # per step; the pull every k steps is this to the power k, times (t/T)³
CHECKPOINT_KEYS = {
    "model",
    "optimizer",
    "scheduler",
    "generator",
    "torch_rng",
    "history",
    "snapshots",
}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from cnnlab.errors import ConfigError

        raise ConfigError(
            "invalid --device cuda: no CUDA GPU is visible to PyTorch; use --device cpu"
        )
    return device


def cpu_has_fast_bf16() -> bool:
    """Return True where oneDNN runs bf16 convolutions natively (AVX-512 BF16 or AMX)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if "AVX512" not in capability:
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(train: TrainConfig, device: str) -> str:
    if train.precision != "auto":
        return train.precision
    if device == "cuda":
        # GPUs without bf16 (before Ampere) have fast fp16 units instead.
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: str, precision: str) -> AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device, dtype=torch.float16)
    return nullcontext()


def environment(device: str, precision: str) -> dict[str, Any]:
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else (platform.processor() or platform.machine())
    )
    return {
        "cnnlab": cnnlab.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": device,
        "device_name": name,
        "precision": precision,
        "channels_last": True,
    }


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; return whether it agreed.

    By default glibc returns every block over 32 MiB to the system when it is
    freed, so each training step maps its large activations afresh and the
    kernel zeroes every page on first touch. Keeping them in the heap cut the
    page faults of a CIFAR-10 step by 4.6 times and sped it up by about 5% on
    a 2-core CPU. Results do not change; the process keeps its peak memory.
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # another C library, such as musl
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameter numbers in glibc's malloc.h
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


class PreparedData:
    """Scaled float tensors of all three splits, kept in memory for the whole run."""

    def __init__(self, data: DatasetSplits, config: RunConfig) -> None:
        subset = config.train.train_subset
        train_images = data.train_images[:subset] if subset else data.train_images
        self.scaler: Scaler = fit_scaler(train_images, config.preprocess)
        self.train_x = self.scaler(train_images)
        self.train_y = data.train_labels[: len(train_images)]
        self.val_x = self.scaler(data.val_images)
        self.val_y = data.val_labels
        self.test_x = self.scaler(data.test_images)
        self.test_y = data.test_labels
        # The value a black pixel maps to, used to fill the border of shifted images.
        self.background = float(
            self.scaler(torch.zeros(1, *data.train_images.shape[1:], dtype=torch.uint8)).mean()
        )


def make_optimizer(
    model: CNN, train: TrainConfig, steps: int, precision: str = "fp32"
) -> tuple[Any, Any]:
    """Return the optimizer and its per-step schedule; ``precision`` is the resolved one."""
    bias_list = norm_biases(model)
    if train.optimizer == "muon" and model.stem is not None:
        # Muon's recipe trains the stem's bias with the other biases.
        bias_list.append(typing.cast(torch.Tensor, model.stem[0].bias))
    biases = {id(p) for p in bias_list}
    trained = [p for p in model.parameters() if p.requires_grad]
    params: list[dict[str, Any]] = [
        {"params": [p for p in trained if id(p) not in biases], "lr": train.lr},
        {"params": [p for p in trained if id(p) in biases], "lr": train.lr * train.bias_lr_scale},
    ]
    optimizer: torch.optim.Optimizer
    if train.optimizer == "muon":
        filters = {id(p) for p in conv_filters(model)}
        params[0]["params"] = [p for p in params[0]["params"] if id(p) not in filters]
        params.append(
            {
                "params": [p for p in trained if id(p) in filters],
                "lr": train.muon_lr,
                "momentum": train.muon_momentum,
                "orthogonalize": True,
            }
        )
        # Muon's matrix iteration runs in bf16 where the run's products do.
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        optimizer = Muon(params, lr=train.lr, momentum=train.momentum, matrix_dtype=dtype)
    elif train.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=train.lr, momentum=train.momentum, nesterov=train.momentum > 0
        )
    elif train.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=train.lr, betas=(train.momentum, 0.999))
    else:
        # weight_decay=0: regularisation is the explicit L2 term in the loss, not decoupled decay.
        optimizer = torch.optim.AdamW(
            params, lr=train.lr, betas=(train.momentum, 0.999), weight_decay=0.0
        )
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if train.schedule == "onecycle":
        # Linear warm-up to the peak, then linear decay towards zero. Written as a
        # LambdaLR because OneCycleLR divides by zero when a run has only a few steps.
        warm = max(1, round(train.warmup_fraction * steps))

        def one_cycle(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (steps - step) / max(1, steps - warm))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, one_cycle)
    elif train.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def penalty_weights(model: nn.Module, train: TrainConfig) -> list[torch.Tensor]:
    """Return the weights of the L2 term: the penalized weights, less Muon's filters.

    Muon rescales the filters to a fixed norm before every step, so a penalty on
    their size would only bend the update. Under Muon the term covers the rest.
    """
    weights = penalized_weights(model)
    if train.optimizer != "muon":
        return weights
    filters = {id(p) for p in conv_filters(model)}
    return [w for w in weights if id(w) not in filters]


def tta_logits(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Return the model's logits for x, averaged over the views of ``tta``.

    flip: the image and its mirror. multicrop: those two with weight 1/2, and the
    image shifted one pixel up-left and one pixel down-right, each with its mirror,
    with weight 1/4 each (K. Jordan, arXiv:2404.00498, 2024). shift: multicrop
    without the mirrors, for images whose mirror is another class (digits).
    """
    if tta == "none":
        return model(x).float()

    def view_logits(view: torch.Tensor) -> torch.Tensor:
        if tta == "shift":
            return model(view).float()
        return 0.5 * (model(view).float() + model(view.flip(3)).float())

    logits = view_logits(x)
    if tta in ("multicrop", "shift"):
        height, width = x.shape[2:]
        padded = F.pad(x, [1, 1, 1, 1], mode="reflect")
        up_left = padded[:, :, :height, :width]
        down_right = padded[:, :, 2 : height + 2, 2 : width + 2]
        logits = 0.5 * logits + 0.25 * (view_logits(up_left) + view_logits(down_right))
    return logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: str,
    precision: str,
    tta: str = "none",
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Return mean cross-entropy, accuracy, predictions and confidences over (x, y)."""
    model.eval()
    total_loss = 0.0
    preds, confs = [], []
    for i in range(0, len(x), EVAL_BATCH):
        xb = x[i : i + EVAL_BATCH].to(device).contiguous(memory_format=torch.channels_last)
        yb = y[i : i + EVAL_BATCH].to(device)
        with autocast(device, precision):
            logits = tta_logits(model, xb, tta)
        logits = logits.float()
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        prob = logits.softmax(dim=1)
        conf, pred = prob.max(dim=1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    pred_all = torch.cat(preds)
    accuracy = (pred_all == y.cpu()).float().mean().item()
    return total_loss / len(x), accuracy, pred_all, torch.cat(confs)


def weight_summary(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Return quantiles, mean and std of every parameter tensor (one epoch's snapshot)."""
    summary = {}
    for name, param in model.named_parameters():
        values = param.detach().float().cpu().flatten()
        values = values[torch.isfinite(values)] if not torch.isfinite(values).all() else values
        if values.numel() == 0:
            values = torch.full((1,), float("nan"))
        q = (
            torch.quantile(values, torch.tensor(QUANTILES))
            if values.numel() > 1
            else values.repeat(len(QUANTILES))
        )
        summary[name] = {
            "quantiles": [round(float(v), 6) for v in q],
            "mean": float(values.mean()),
            "std": float(values.std()) if values.numel() > 1 else 0.0,
        }
    return summary


def weight_histograms(model: nn.Module) -> dict[str, tuple[list[float], list[int]]]:
    hists = {}
    for name, param in model.named_parameters():
        values = param.detach().float().cpu().numpy().ravel()
        values = values[np.isfinite(values)]
        counts, edges = np.histogram(values, bins=HIST_BINS)
        hists[name] = ([float(e) for e in edges], [int(c) for c in counts])
    return hists


def l2_norm_sq(weights: list[torch.Tensor]) -> torch.Tensor:
    """Return Σ‖w‖² over ``weights`` in fp32, differentiable."""
    return torch.stack([w.float().pow(2).sum() for w in weights]).sum()


class Lookahead:
    """Slow weights that the trained weights are pulled towards every ``every`` steps.

    At step t of T the slow copy moves towards the current weights by 1 - d with
    d = 0.95^every · (t/T)³, and the model then takes the slow values: no pull
    early on, a strong average late in training (K. Jordan, arXiv:2404.00498, 2024).
    All floating-point state is averaged, batch-norm running statistics included.
    """

    def __init__(
        self,
        model: nn.Module,
        every: int,
        total_steps: int,
        state: dict[str, torch.Tensor] | None,
        *,
        start_step: int = 0,
    ) -> None:
        self.every, self.total, self.count = every, total_steps, start_step
        self.live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
        self.slow: dict[str, torch.Tensor] = {}
        if every:
            self.slow = {k: v.detach().clone() for k, v in self.live.items()}
            if state is not None:
                for key, value in state.items():
                    self.slow[key].copy_(value)

    @torch.no_grad()
    def _pull(self, decay: float) -> None:
        for key, value in self.live.items():
            slow = self.slow[key]
            slow.lerp_(value, 1.0 - decay)
            value.copy_(slow)

    def step(self) -> None:
        self.count += 1
        if self.every and self.count % self.every == 0:
            self._pull(LOOKAHEAD_DECAY**self.every * (self.count / self.total) ** 3)

    def finish(self) -> None:
        """End training on the slow weights."""
        if self.every:
            self._pull(1.0)

    def state(self) -> dict[str, torch.Tensor] | None:
        return self.slow if self.every else None


def train_run(
    config: RunConfig,
    data: DatasetSplits,
    *,
    checkpoint: Path | None = None,
    weights_out: Path | None = None,
    progress: bool = True,
    label: str = "",
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train one model and return its run record (see docs/results.md).

    With ``stop_after`` the run pauses after that many epochs and leaves its
    checkpoint. It then returns a record with status ``stopped``, and a later
    call with the same checkpoint continues the run.
    """
    device = config.device
    precision = resolve_precision(config.train, device)
    train = config.train
    input_shape = tuple(data.train_images.shape[1:])
    num_classes = len(data.classes)

    if device == "cpu":
        keep_freed_memory()
    prepared = PreparedData(data, config)
    if device != "cpu":
        # The training split moves to the GPU once, so batches need no copy each step.
        # Evaluation copies its own batches and returns its predictions on the CPU.
        prepared.train_x = prepared.train_x.to(device)
        prepared.train_y = prepared.train_y.to(device)
    n_train = len(prepared.train_x)
    steps_per_epoch = math.ceil(n_train / train.batch_size)
    divergence_limit = DIVERGENCE_FACTOR * math.log(num_classes)

    def fresh_state() -> tuple[CNN, Any, Any, torch.Generator]:
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        model = build_model(config.model, input_shape, num_classes)  # type: ignore[arg-type]
        if model.stem is not None:
            # Fitted on the CPU, so that the stem is the same on every device.
            model.stem.fit(prepared.train_x[:WHITEN_IMAGES].cpu())
        model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        optimizer, scheduler = make_optimizer(
            model, train, train.epochs * steps_per_epoch, precision
        )
        return model, optimizer, scheduler, generator

    model, optimizer, scheduler, generator = fresh_state()
    slow_state: dict[str, torch.Tensor] | None = None
    scaler_state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    snapshots: list[dict[str, dict[str, Any]]] = [weight_summary(model)]
    status, diverged_epoch = "completed", None
    start_epoch = 0
    test_pred: torch.Tensor | None = None
    if checkpoint is not None and checkpoint.exists():
        try:
            state = torch.load(checkpoint, weights_only=True)
            if not isinstance(state, dict) or not CHECKPOINT_KEYS.issubset(state):
                raise ValueError("it lacks the training state")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            slow_state = state.get("lookahead")
            scaler_state = state.get("grad_scaler")
            if train.lookahead_every and not isinstance(slow_state, dict):
                raise ValueError("it lacks the Lookahead weights")
        except Exception as exc:  # a damaged checkpoint only costs the retraining
            # The type only, unless the reason is ours: torch's own text runs to several lines.
            reason = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
            log.warning(
                "ignoring unusable checkpoint %s (%s); training from the start", checkpoint, reason
            )
            model, optimizer, scheduler, generator = fresh_state()
            slow_state = None
            scaler_state = None
        else:
            history = state["history"]
            snapshots = state["snapshots"]
            start_epoch = len(history)
            log.info("%s resuming after epoch %d from %s", label, start_epoch, checkpoint)
    weights = penalty_weights(model, train)
    # fp16 overflows where bf16 would not, so its gradients are scaled up for the backward
    # pass and back down before the step, which is skipped if any came out infinite.
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    if scaler_state:
        scaler.load_state_dict(scaler_state)
    sync_every = SYNC_STEPS.get(device, GPU_SYNC_STEPS)
    # The compiled wrapper shares the model's parameters; checkpoints and evaluation
    # keep using the plain module, so stored weights have the same names either way.
    step_model = torch.compile(model) if train.compile else model
    lookahead = Lookahead(
        model,
        train.lookahead_every,
        train.epochs * steps_per_epoch,
        slow_state,
        start_step=start_epoch * steps_per_epoch,
    )
    # Alternating flip: one fixed random choice per image, inverted in every odd epoch.
    flip_first = torch.rand(n_train, generator=torch.Generator().manual_seed(config.seed + 1)) < 0.5

    bar = tqdm(
        total=train.epochs * steps_per_epoch,
        initial=start_epoch * steps_per_epoch,
        desc=label or "train",
        unit="step",
        # None: tqdm draws the bar only on a terminal, so redirected logs stay clean.
        disable=None if progress else True,
        leave=False,
        dynamic_ncols=True,
    )
    for epoch in range(start_epoch, train.epochs):
        model.train()
        if model.stem is not None and 0 < train.whiten_bias_epochs <= epoch:
            model.stem.freeze_bias()
        t0 = time.perf_counter()
        order = torch.randperm(n_train, generator=generator)
        # Running sums stay on the device, so adding to them does not make a GPU wait.
        sum_ce = torch.zeros((), dtype=torch.float64, device=device)
        sum_pen = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        worst = torch.zeros((), device=device)  # the largest cross-entropy since the last check
        finite = True
        for step, i in enumerate(range(0, n_train, train.batch_size)):
            idx = order[i : i + train.batch_size]
            flip_mask = None
            if config.preprocess.alternate_flip:
                flip_mask = flip_first[idx] ^ bool(epoch % 2)
            if device != "cpu":
                idx = idx.to(device)
            xb = augment(
                prepared.train_x[idx],
                config.preprocess,
                generator,
                background=prepared.background,
                flip_mask=flip_mask,
            )
            xb = xb.to(device).contiguous(memory_format=torch.channels_last)
            yb = prepared.train_y[idx].to(device)
            with autocast(device, precision):
                logits = step_model(xb)
            ce = F.cross_entropy(logits.float(), yb, label_smoothing=train.label_smoothing)
            loss = ce
            penalty = torch.zeros((), device=device)
            if train.l2 > 0:
                penalty = train.l2 * l2_norm_sq(weights)
                loss = ce + penalty
            # A non-finite loss counts as infinite, and a NaN cross-entropy stays NaN in
            # torch.maximum, so both fail the check below.
            worst = torch.maximum(worst, torch.where(loss.isfinite(), ce.detach(), math.inf))
            checked = (step + 1) % sync_every == 0 or i + train.batch_size >= n_train
            if checked and not worst.item() <= divergence_limit:
                finite = False
                break
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            with warnings.catch_warnings():
                # A step that the fp16 scaler skipped still advances the schedule.
                warnings.filterwarnings(
                    "ignore", "Detected call of `lr_scheduler.step", UserWarning
                )
                scheduler.step()
            lookahead.step()
            sum_ce += ce.detach().double() * len(idx)
            sum_pen += penalty.detach().double() * len(idx)
            correct += (logits.argmax(dim=1) == yb).sum()
            bar.update(1)
        if finite and epoch + 1 == train.epochs:
            lookahead.finish()
        if device == "cuda":
            torch.cuda.synchronize()  # count the queued GPU work in this epoch's time
        epoch_time = time.perf_counter() - t0
        if not finite:
            status, diverged_epoch = "diverged", epoch + 1
            log.warning(
                "%s diverged in epoch %d: the loss became NaN, infinite or over %.0f; lower the learning rate",
                label,
                epoch + 1,
                divergence_limit,
            )
            break

        t1 = time.perf_counter()
        val_loss, val_acc, _, _ = evaluate(model, prepared.val_x, prepared.val_y, device, precision)
        test_loss, test_acc, test_pred, _ = evaluate(
            model, prepared.test_x, prepared.test_y, device, precision
        )
        eval_time = time.perf_counter() - t1
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": (sum_ce + sum_pen).item() / n_train,
            "train_ce": sum_ce.item() / n_train,
            "l2_penalty": sum_pen.item() / n_train,
            "train_accuracy": correct.item() / n_train,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "test_loss": test_loss,
            "test_accuracy": test_acc,
            "epoch_time_s": epoch_time,
            "eval_time_s": eval_time,
            # Over all conv and linear weights, as documented, even where Muon's
            # penalty leaves the filters out.
            "weight_norm_sq": float(l2_norm_sq(penalized_weights(model)).detach()),
        }
        history.append(row)
        snapshots.append(weight_summary(model))
        if not math.isfinite(val_loss):
            status, diverged_epoch = "diverged", epoch + 1
            log.warning(
                "%s diverged in epoch %d: the validation loss is not finite", label, epoch + 1
            )
            break
        log.info(
            "%s epoch %2d/%d  loss %.4f  train %.2f%%  val %.2f%%  test %.2f%%  %.1fs",
            label,
            epoch + 1,
            train.epochs,
            row["train_loss"],
            100 * row["train_accuracy"],
            100 * val_acc,
            100 * test_acc,
            epoch_time,
        )
        if checkpoint is not None and epoch + 1 < train.epochs:
            atomic_torch_save(
                checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "snapshots": snapshots,
                    "lookahead": lookahead.state(),
                    "grad_scaler": scaler.state_dict() if scaler.is_enabled() else None,
                },
            )
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < train.epochs:
            status = "stopped"
            break
    bar.close()

    return _run_record(
        config,
        data,
        model,
        prepared,
        history,
        snapshots,
        status,
        diverged_epoch,
        precision,
        weights_out,
        test_pred,
    )


def _run_record(
    config: RunConfig,
    data: DatasetSplits,
    model: CNN,
    prepared: PreparedData,
    history: list[dict[str, Any]],
    snapshots: list[dict[str, dict[str, Any]]],
    status: str,
    diverged_epoch: int | None,
    precision: str,
    weights_out: Path | None,
    test_pred: torch.Tensor | None,
) -> dict[str, Any]:
    device = config.device
    tta = config.train.tta
    input_shape = tuple(data.train_images.shape[1:])
    num_classes = len(data.classes)
    table = layer_table(config.model, input_shape, num_classes)  # type: ignore[arg-type]
    final: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "flops": sum(row.flops for row in table),
        "train_time_s": sum(row["epoch_time_s"] for row in history),
    }
    confusion: list[list[int]] = []
    if status in ("completed", "stopped"):
        last = history[-1]
        for key in (
            "train_accuracy",
            "val_accuracy",
            "test_accuracy",
            "val_loss",
            "test_loss",
            "weight_norm_sq",
        ):
            final[key] = last[key]
        n = min(TRAIN_EVAL_IMAGES, len(prepared.train_x))
        _, final["train_clean_accuracy"], _, _ = evaluate(
            model, prepared.train_x[:n], prepared.train_y[:n], device, precision
        )
        final["tta"] = tta
        pred = test_pred
        if tta != "none":
            # The epoch rows stay single-view, so the curves compare like with like;
            # the final figures are those of the test-time augmented predictions.
            t0 = time.perf_counter()
            final["val_accuracy_single_view"] = last["val_accuracy"]
            final["test_accuracy_single_view"] = last["test_accuracy"]
            final["val_loss"], final["val_accuracy"], _, _ = evaluate(
                model, prepared.val_x, prepared.val_y, device, precision, tta
            )
            final["test_loss"], final["test_accuracy"], pred, _ = evaluate(
                model, prepared.test_x, prepared.test_y, device, precision, tta
            )
            final["tta_time_s"] = time.perf_counter() - t0
        elif pred is None:
            _, _, pred, _ = evaluate(model, prepared.test_x, prepared.test_y, device, precision)
        matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
        matrix.index_put_((prepared.test_y, pred), torch.ones_like(pred), accumulate=True)
        confusion = matrix.tolist()
        final["images_per_s"] = (
            len(prepared.train_x) * len(history) / max(final["train_time_s"], 1e-9)
        )
        if weights_out is not None and status == "completed":
            atomic_torch_save(weights_out, model.state_dict())
    names = list(snapshots[0])
    hists = weight_histograms(model)
    layers = {
        name: {
            "kind": "bias" if name.endswith("bias") else "weight",
            "quantiles": [snap[name]["quantiles"] for snap in snapshots],
            "mean": [snap[name]["mean"] for snap in snapshots],
            "std": [snap[name]["std"] for snap in snapshots],
            "hist_edges": hists[name][0],
            "hist_counts": hists[name][1],
        }
        for name in names
    }
    return finite_or_none(
        {
            "config": to_dict(config),
            "status": status,
            "diverged_epoch": diverged_epoch,
            "history": history,
            "final": final,
            "architecture": [row.to_dict() for row in table],
            "weights": {"epochs": list(range(len(snapshots))), "layers": layers},
            "confusion": confusion,
            "environment": environment(device, precision),
        }
    )


def finite_or_none(obj: Any) -> Any:
    """Replace NaN and infinite floats by None, which JSON can store, in nested data."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [finite_or_none(value) for value in obj]
    return obj
