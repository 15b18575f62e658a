"""Command line: ``cnnlab study``, ``train``, ``report`` and ``bench``.

This module only parses options and wires them to the study, training and
report modules. Errors caused by input become one line on stderr and an exit
code (2 for invalid options, 3 for bad data, 4 for unwritable output).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from cnnlab import __version__
from cnnlab.errors import CnnlabError, ConfigError

log = logging.getLogger("cnnlab")

# The message after Ctrl-C for each command: what was kept and how to go on.
INTERRUPTED = {
    "study": "cnnlab: interrupted; finished runs are stored, rerun the same command to resume",
    "train": "cnnlab: interrupted; finished epochs are stored, rerun the same command to resume",
    "bench": "cnnlab: interrupted; nothing was written, rerun the bench to measure again",
    "report": "cnnlab: interrupted; rerun the same command to rebuild the report",
}


def _usage_error_line(prog: str, message: str) -> str:
    return f"cnnlab: error: {message}; see '{prog} --help'\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line and exit 2, like every other input error
        self.exit(2, _usage_error_line(self.prog, message))


def _parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv, pointing an unrecognized argument after a command at that command's help."""
    args, unrecognized = parser.parse_known_args(argv)
    if not unrecognized:
        return args
    tokens = sys.argv[1:] if argv is None else argv
    # argparse passes every token after the command name to the command's parser, which
    # returns the ones it does not know. Only tokens before the command name are the
    # main parser's.
    after_command = bool(tokens) and tokens[0] == args.command
    prog = f"{parser.prog} {args.command}" if after_command else parser.prog
    message = f"unrecognized arguments: {' '.join(unrecognized)}"
    parser.exit(2, _usage_error_line(prog, message))


# Maps the argparse dest of each option that sets a config field to the option and to the
# field name that config validation writes in its "invalid FIELD VALUE: ..." messages.
_OPTION_FIELDS = {
    "epochs": ("--epochs", "train.epochs"),
    "lr": ("--lr", "train.lr"),
    "batch_size": ("--batch-size", "train.batch_size"),
    "l2": ("--l2", "train.l2"),
    "seed": ("--seed", "seed"),
    "seeds": ("--seeds", "seeds"),
    "device": ("--device", "device"),
}


def _name_option(message: str, args: argparse.Namespace) -> str:
    """Replace the config field in an invalid-value message with the option that set it.

    A field that no option set, because its value came from --config or a default,
    stays as it is.
    """
    for dest, (option, field) in _OPTION_FIELDS.items():
        prefix = f"invalid {field} "
        if getattr(args, dest, None) is not None and message.startswith(prefix):
            return f"invalid {option} {message.removeprefix(prefix)}"
    return message


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a whole number"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}: must be at least 1")
    return value


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("invalid empty folder name: give a path such as ./data")
    return text


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid value {text!r}: expected a whole number"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {value}: must be 0 or more")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be a finite number")
    return value


def _baseline(dataset: str, name: str) -> Any:
    from cnnlab.config import default_study

    return getattr(default_study(dataset).train, name)


def _common(
    parser: argparse.ArgumentParser,
    *,
    config: bool = True,
    quiet_help: str = "print only warnings and errors, no progress bars",
) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=_folder,
        help="folder with the dataset files (default: $CNNLAB_DATA, else a per-user cache "
        "folder); missing files are downloaded there",
    )
    if config:
        parser.add_argument(
            "--config", metavar="FILE", help="TOML or JSON file overriding the default settings"
        )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where to train (default: auto, a CUDA GPU when one is visible, else the CPU)",
    )
    parser.add_argument(
        "--seed", type=_nonneg_int, default=None, help="first random seed (default: 0)"
    )
    parser.add_argument("--quiet", action="store_true", help=quiet_help)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cnnlab",
        description="Reproducible convolutional-network studies on MNIST and CIFAR-10, with a written report.",
    )
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    study = sub.add_parser(
        "study",
        help="run a full study and write its report",
        description="Train the baseline, the stride x kernel-size grid and the L2 grid (and, for "
        "CIFAR-10, the preprocessing ablation), analyse predictions and feature maps, and write "
        "report.html, report.md, figures/ and results.json. Finished runs are reused, so "
        "rerunning an interrupted study resumes it.",
    )
    study.add_argument("dataset", help="mnist or cifar10")
    study.add_argument(
        "--quick", action="store_true", help="short training budgets: a smoke run of every section"
    )
    study.add_argument(
        "--out",
        metavar="DIR",
        type=_folder,
        help="run folder (default: runs/DATASET, or runs/DATASET-quick with --quick)",
    )
    study.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="repeat every comparative run with N seeds (default: 1)",
    )
    _common(study)

    train = sub.add_parser(
        "train",
        help="train the baseline model once",
        description="Train one model with the study's baseline settings and print its metrics.",
    )
    train.add_argument("dataset", help="mnist or cifar10")
    train.add_argument(
        "--out", metavar="DIR", type=_folder, help="run folder (default: runs/DATASET-train)"
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        help="training epochs (default: the study's baseline, "
        f"{_baseline('mnist', 'epochs')} for MNIST, {_baseline('cifar10', 'epochs')} for CIFAR-10)",
    )
    train.add_argument(
        "--lr",
        type=_finite_float,
        help="peak learning rate (default: the study's baseline, "
        f"{_baseline('mnist', 'lr')} for MNIST, {_baseline('cifar10', 'lr')} for CIFAR-10)",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        help="images per training step (default: the study's baseline, "
        f"{_baseline('mnist', 'batch_size')} for MNIST, "
        f"{_baseline('cifar10', 'batch_size')} for CIFAR-10)",
    )
    train.add_argument(
        "--l2",
        type=_finite_float,
        help="α of the explicit penalty α·Σ‖w‖² (default: the study's baseline, "
        f"{_baseline('mnist', 'l2')} for MNIST, {_baseline('cifar10', 'l2')} for CIFAR-10)",
    )
    train.add_argument("--quick", action="store_true", help="use the quick study's baseline budget")
    _common(train)

    report = sub.add_parser(
        "report",
        help="rebuild the report of a finished study",
        description="Rebuild report.html, report.md and figures/ from RUN_DIR/results.json and artifacts.npz.",
    )
    report.add_argument(
        "run_dir", metavar="RUN_DIR", help="a study's run folder, holding results.json"
    )
    report.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    report.add_argument("--debug", action="store_true", help="show the full traceback on errors")

    bench = sub.add_parser(
        "bench",
        help="measure time to target accuracy, throughput and hardware use",
        description="Measure the matrix-product peak of this machine, then train each fixed "
        "benchmark recipe once per seed and report its test accuracy (mean and range), "
        "training time (evaluation excluded), images per second, FLOP/s against the peak "
        "and peak memory.",
    )
    bench.add_argument(
        "datasets",
        nargs="*",
        default=["mnist", "cifar10"],
        metavar="DATASET",
        help="mnist, cifar10 or both (default: both)",
    )
    bench.add_argument(
        "--seeds", type=_positive_int, default=3, help="runs per recipe (default: 3)"
    )
    bench.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="autocast precision (default: auto, bf16 where the hardware runs it fast)",
    )
    bench.add_argument(
        "--out",
        metavar="FILE",
        default=None,
        help="also write the results to this JSON file (a new file, or an earlier bench result)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="one short run per dataset, to check the setup"
    )
    _common(bench, config=False, quiet_help="print only warnings and the table")
    return parser


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    # basicConfig does nothing when the root logger already has a handler, as under
    # pytest, so --quiet also sets the level of cnnlab's own loggers.
    log.setLevel(level)
    # pooch logs through its own logger object, not the one logging.getLogger("pooch") returns.
    # Its INFO lines repeat, once per mirror, the line that cnnlab.data logs per downloaded
    # file, so only its warnings are shown.
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)


def _load_study(args: argparse.Namespace) -> Any:
    from cnnlab.config import check_choice, default_study, read_config_file, study_from_dict

    check_choice("dataset", args.dataset, ("mnist", "cifar10"))
    study = default_study(args.dataset, quick=args.quick)
    if args.config:
        data = read_config_file(args.config)
        if "dataset" in data and data["dataset"] != args.dataset:
            raise ConfigError(
                f"config file {args.config} sets dataset {data['dataset']!r} but the command asks "
                f"for {args.dataset!r}; remove the key or change the command"
            )
        study = study_from_dict(data, study)
    overrides: dict[str, Any] = {}
    if args.device is not None:
        overrides["device"] = args.device
    if args.seed is not None:
        overrides["seed"] = args.seed
    if getattr(args, "seeds", None) is not None:
        overrides["seeds"] = args.seeds
    return dataclasses.replace(study, **overrides)


def _cmd_study(args: argparse.Namespace) -> int:
    from cnnlab.study import run_study

    study = _load_study(args)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / (args.dataset + ("-quick" if args.quick else ""))
    )
    results = run_study(
        study, out=out, data_dir=args.data_dir, quick=args.quick, progress=not args.quiet
    )
    print(f"report: {out / 'report.html'}")
    print(f"        {out / 'report.md'}")
    print(f"results: {results}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from cnnlab.study import single_run

    study = _load_study(args)
    train_overrides = {
        name: value
        for name, value in (
            ("epochs", args.epochs),
            ("lr", args.lr),
            ("batch_size", args.batch_size),
            ("l2", args.l2),
        )
        if value is not None
    }
    study = dataclasses.replace(study, train=dataclasses.replace(study.train, **train_overrides))
    out = Path(args.out) if args.out else Path("runs") / f"{args.dataset}-train"
    record = single_run(study, out=out, data_dir=args.data_dir, progress=not args.quiet)
    final = record["final"]
    if record["status"] != "completed":
        print(
            f"run {record['key']} diverged in epoch {record['diverged_epoch']}; lower the learning rate"
        )
        return 1
    print(
        f"run {record['key']}: test accuracy {100 * final['test_accuracy']:.2f}%, "
        f"validation {100 * final['val_accuracy']:.2f}%, "
        f"{final['train_time_s']:.1f} s training; stored in {out / 'runs'}"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from cnnlab.report import write_report

    paths = write_report(Path(args.run_dir))
    for name in ("html", "md"):
        if name in paths:
            print(f"report: {paths[name]}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from cnnlab.bench import format_results, run_bench
    from cnnlab.config import MAX_SEED, MAX_SEEDS, check_choice, check_range

    for dataset in args.datasets:
        check_choice("dataset", dataset, ("mnist", "cifar10"))
    # A study's limits. Without them, a seed past the 64-bit range of torch.manual_seed
    # fails with a traceback once training starts.
    check_range("--seeds", args.seeds, low=1, high=MAX_SEEDS)
    first_seed = 0 if args.seed is None else args.seed
    check_range("--seed", first_seed, low=0, high=MAX_SEED)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.is_dir():
            raise ConfigError(
                f"invalid --out {out}: it is a folder; give a file name ending in .json"
            )
        if out.suffix.lower() != ".json":
            raise ConfigError(f"invalid --out {out}: give a file name ending in .json")
    results = run_bench(
        list(dict.fromkeys(args.datasets)),
        seeds=args.seeds,
        first_seed=first_seed,
        device=args.device or "auto",
        precision=args.precision,
        data_dir=args.data_dir,
        out=out,
        quick=args.quick,
        progress=not args.quiet,
    )
    print(format_results(results))
    if out is not None:
        print(f"results: {out}")
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse_args(parser, argv)
    _setup_logging(args.quiet)
    # SIGTERM ends the process like Ctrl-C; stored runs and checkpoints are already complete files.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    commands = {
        "study": _cmd_study,
        "train": _cmd_train,
        "report": _cmd_report,
        "bench": _cmd_bench,
    }
    try:
        # Log lines go through tqdm so that they do not break a progress bar in half.
        with logging_redirect_tqdm():
            return commands[args.command](args)
    except CnnlabError as exc:
        if args.debug:
            raise
        message = _name_option(str(exc), args) if isinstance(exc, ConfigError) else str(exc)
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Start on a new line in case a progress bar was being drawn.
        print(
            ("\n" if sys.stderr.isatty() else "")
            + INTERRUPTED.get(args.command, INTERRUPTED["study"]),
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
