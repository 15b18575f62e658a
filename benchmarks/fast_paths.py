"""Measure what bf16 autocast and channels-last memory buy for the default models.

Trains the study's baseline model on the real data for a fixed number of steps
in each combination and prints training images per second, then trains one
short schedule in fp32 and in bf16 and prints both accuracies, so a speed-up
never hides a change in results.

    python benchmarks/fast_paths.py --data-dir ../shared/data [--dataset mnist] [--steps 60]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from cnnlab.config import RunConfig, default_study
from cnnlab.data import load_dataset
from cnnlab.models import build_model
from cnnlab.train import PreparedData, autocast, train_run


def images_per_second(
    config: RunConfig, data, steps: int, *, bf16: bool, channels_last: bool
) -> float:
    torch.manual_seed(0)
    prepared = PreparedData(data, config)
    model = build_model(config.model, tuple(data.train_images.shape[1:]), len(data.classes))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    batch = config.train.batch_size
    warmup = 5
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        i = (step * batch) % (len(prepared.train_x) - batch)
        x = prepared.train_x[i : i + batch].contiguous(memory_format=memory_format)
        y = prepared.train_y[i : i + batch]
        with autocast("cpu", "bf16" if bf16 else "fp32"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument(
        "--steps", type=int, default=60, help="timed training steps per combination"
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="epochs of the fp32 vs bf16 accuracy check"
    )
    args = parser.parse_args()

    study = default_study(args.dataset)
    data = load_dataset(args.dataset, args.data_dir)
    config = RunConfig(args.dataset, study.model, study.train, study.preprocess, 0, "cpu")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'precision':<10}{'memory format':<16}{'images/s':>10}")
    for bf16 in (False, True):
        for channels_last in (False, True):
            rate = images_per_second(
                config, data, args.steps, bf16=bf16, channels_last=channels_last
            )
            fmt = "channels_last" if channels_last else "contiguous"
            print(f"{'bf16' if bf16 else 'fp32':<10}{fmt:<16}{rate:>10.0f}", flush=True)

    print(f"\naccuracy after {args.epochs} epochs (seed 0, the baseline recipe otherwise):")
    print(f"{'precision':<10}{'val acc':>9}{'test acc':>10}{'train s':>9}")
    for precision in ("fp32", "bf16"):
        train = dataclasses.replace(study.train, epochs=args.epochs, precision=precision)
        record = train_run(dataclasses.replace(config, train=train), data, progress=False)
        final = record["final"]
        print(
            f"{precision:<10}{100 * final['val_accuracy']:>8.2f}%{100 * final['test_accuracy']:>9.2f}%"
            f"{final['train_time_s']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
