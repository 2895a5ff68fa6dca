"""The ``unforget`` command line.

Only the standard library and :mod:`unforget.errors` are imported at the top: everything else
(PyTorch among it) is imported inside :func:`main`, so that a Ctrl-C at any time, imports
included, ends with one line and exit status 130, and a project error with one
``unforget: error: ...`` line and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from unforget.errors import ConfigError, UnforgetError

CHECKPOINT = "checkpoint.safetensors"
"""``unforget.checkpoint.CHECKPOINT``, repeated here: that module needs PyTorch, and the Ctrl-C
message must not wait for (or be interrupted by) importing it."""

EPILOG = """examples:
  unforget run                                   # embedded default: digits (5 tasks x 2 classes), cpg, no data needed
  unforget run --benchmark split-cifar10 --method cpg --data-root ../shared/data
  unforget run --benchmark split-cifar10 --method finetune --epochs 2 --width 0.25
  unforget run --benchmark split-cifar100 --method cpg --preset paper --device cuda
  unforget run --benchmark image-folder --data-root myimages/   # own data: settings sized to it, printed
  unforget run --benchmark split-cifar10 --method cpg --out runs/c10 --resume   # continue after a stop
  unforget run --benchmark split-cifar10 --method cpg --out runs/c10 --overwrite  # start that run over
  unforget compare --benchmark split-cifar10 --methods cpg,packnet,scratch,finetune --data-root ../shared/data
  unforget report runs/compare-split-cifar10     # rebuild tables and figures without training
  unforget list                                  # benchmarks, methods and models
  unforget learn runs/digits --data mytask/      # add a task to a trained model, months later
  unforget predict runs/digits --task 2 photo.png  # classify raw image files with task 2
  unforget export runs/digits --task 2 --format onnx --out task2.onnx   # ship one task

Results: OUT/results.json (accuracy matrix R[i][j] = test accuracy on task j after learning
task i, average accuracy, BWT, model size, Exp., Red.), OUT/report.md (with, for CPG, why each
task was grown, compacted and retrained), OUT/log.csv (one row per training epoch: task, phase,
loss, train/val accuracy, lr, pruning ratio, seconds; --log tensorboard adds OUT/tensorboard/),
and a checkpoint OUT/checkpoint.safetensors written after every task. Progress: bars on a
terminal, one plain line per epoch with ETAs when piped to a file. A folder holding a run is never overwritten
unless --overwrite is given; one process at a time writes to it (OUT/.lock).
"""


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `compare`."""
    from unforget.config import PRESETS

    p.add_argument("--benchmark", "-b", help="task sequence (see `unforget list`); default: digits, embedded, no download")
    p.add_argument("--benchmark-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the benchmark itself (benchmark.options), e.g. --benchmark-option age_fold=2 "
                        "for facial; repeatable")
    p.add_argument("--config", "-c", help="YAML file overriding the preset (same keys as results.json's config)")
    p.add_argument("--preset", default="cpu", choices=list(PRESETS),
                   help="hyper-parameter preset: cpu (a 2-core machine finishes in minutes), full (split-cifar10 on "
                        "all images, about half an hour per method on 2 cores), paper (published settings) or wsn "
                        "(permuted-mnist as the WSN paper runs it: 10 tasks, 784-100-100 MLP, batch 10). Own data "
                        "(image-folder, npz) has no preset: an automatic configuration sized to the data and the "
                        "device is chosen and printed (one line); flags and --config override it")
    p.add_argument("--data-root", help="folder holding the datasets (default: $UNFORGET_DATA_ROOT or ./data)")
    p.add_argument("--download", action="store_true", help="download missing official archives (needs internet)")
    p.add_argument("--out", "-o", help="output folder (default: runs/BENCHMARK-METHOD)")
    p.add_argument("--no-plots", action="store_true",
                   help="tables only: no PNG figures beside report.md (draw them later with `unforget report OUT`)")
    p.add_argument("--epochs", type=int, help="training epochs per task (per growth round for cpg)")
    p.add_argument("--width", type=float, help="width multiplier of the zoo model (1.0 = published size)")
    p.add_argument("--pretrained", metavar="FILE",
                   help="a pretrained network as task 1 (CPG experiments 2-3): a state dict / safetensors file in "
                        "torchvision's or timm's ResNet-50 key layout (or the zoo model's own), with its classifier "
                        "head; 'torchvision' fetches the published ImageNet ResNet-50 (online only). The benchmark's "
                        "tasks become tasks 2..; name, given accuracy, data and compacting of task 1 under "
                        "'pretrained:' in --config (engine methods: cpg, pae, packnet, piggyback)")
    p.add_argument("--model", help="zoo model name (default: per benchmark, see `unforget list`)")
    p.add_argument("--batch-size", type=int, help="mini-batch size")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"],
                   help="optimizer of the weights (train.optimizer; the preset's, else sgd with Nesterov momentum)")
    p.add_argument("--lr", type=float, help="learning rate of the weights")
    p.add_argument("--seed", type=int, help="seed of initialisation, batch order and augmentation")
    p.add_argument("--precision", choices=["32", "bf16", "16"],
                   help="training arithmetic (train.precision): 32 (default), bf16 or 16 (torch.autocast; 16 with "
                        "gradient scaling). Weights and evaluation stay float32, so exactness does not depend on it")
    p.add_argument("--memory-format", choices=["auto", "contiguous", "channels_last"],
                   help="layout of conv nets while training (train.memory_format): auto (default) = channels_last "
                        "on CUDA, contiguous elsewhere; the model is contiguous again after each fit")
    p.add_argument("--compile", action="store_const", const=True, default=None,
                   help="train through torch.compile (train.compile; off by default: compiling takes time up front; "
                        "on CPU it needs a C++ compiler). Evaluation and serving stay eager")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic algorithms (train.deterministic; on by default): a repeated or resumed run "
                        "ends bit-identical on the same device type and PyTorch build; --no-deterministic lets "
                        "PyTorch pick faster nondeterministic GPU kernels")
    p.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile mode (train.compile_mode; implies --compile): reduce-overhead replays each "
                        "training step as CUDA graphs (CUDA only), max-autotune also tunes kernels")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars or per-epoch lines")
    _retest(p)
    p.add_argument("--log", action="append", choices=["tensorboard"], default=[],
                   help="besides OUT/log.csv (one row per training epoch, always written): tensorboard writes event "
                        "files to OUT/tensorboard/ (needs pip install 'unforget[tensorboard]')")
    _threads(p)


def _retest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retest", action="store_true",
                   help="re-test every earlier task after each task. By default an exact method's earlier task "
                        "whose served network and test data are bit-identical to when it was first tested (a "
                        "SHA-256 certificate) keeps that accuracy without a test pass; report.md counts them")


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="PyTorch CPU threads (torch.set_num_threads; default: PyTorch's, usually the core count). "
                        "Recorded in results.json: bit-exact reloads and resumes need the same count")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unforget", description="Task-incremental continual learning without forgetting: "
                                "CPG (compacting, picking, growing), PackNet, PAE, Piggyback and baselines.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="learn a task sequence with one method and report the accuracy matrix",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       description="Learn every task of a benchmark in order with one method. Task ids are known at "
                       "test time (task-incremental, multi-head). After each task the model is tested on all tasks "
                       "so far, giving row i of the accuracy matrix R.")
    r.add_argument("--method", "-m", help="continual-learning method (see `unforget list`); default: cpg")
    _common(r)
    r.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    r.add_argument("--overwrite", action="store_true",
                   help="start over: delete the previous run's results and checkpoint in --out first (a run "
                        "already in --out is otherwise refused)")
    c = sub.add_parser("compare", help="run several methods on one benchmark and write one report",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run several methods on one benchmark with one configuration (same seeds, splits "
                       "and epochs), one after another, and write OUT/report.md (the CPG paper's table layout: one "
                       "column per task, then Avg., BWT, Exp., Red., model size), CLNP's capacity table and PNG "
                       "figures. A method already finished in OUT is not run again; an interrupted one resumes; one made "
                       "with another configuration starts over; one line per method says which.",
                       epilog="example:\n  unforget compare --benchmark split-cifar10 --methods "
                       "cpg,packnet,pae,piggyback,scratch,finetune --data-root ../shared/data")
    c.add_argument("--methods", required=True, help="comma-separated method names, e.g. cpg,packnet,scratch")
    _common(c)
    rp = sub.add_parser("report", help="rebuild the report and figures of a run or a comparison from saved results (no training)")
    rp.add_argument("folder", help="folder written by `unforget compare`, or one run's folder (`unforget run --out`)")
    rp.add_argument("--no-plots", action="store_true", help="tables only")
    sub.add_parser("list", help="list benchmarks, methods and models")
    lr = sub.add_parser("learn", help="add one new task to a trained model (lifelong use)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Learn one new task into the run in MODEL_DIR with the run's method and "
                        "configuration (CPG: picks, growth, compacting, goal). Earlier tasks keep answering "
                        "exactly as before. Their test accuracy is re-measured when their data is still "
                        "reachable (tasks added by `learn` from their folder or file; the run's benchmark with "
                        "--data-root), else recorded as not re-evaluated. The checkpoint, results.json and "
                        "report.md are rewritten atomically.",
                        epilog="examples:\n  unforget run --out runs/digits\n"
                        "  unforget learn runs/digits --data mydata/shapes            # CLASS/*.png or train/ test/\n"
                        "  unforget learn runs/digits --data more.npz --name letters  # x_train, y_train, x_test, y_test")
    lr.add_argument("model_dir", help="folder of a run (holds checkpoint.safetensors)")
    lr.add_argument("--data", required=True, help="the new task: a folder with one subfolder per class (optionally "
                    "train/ and test/), or an .npz file with x_train, y_train, x_test, y_test")
    lr.add_argument("--name", help="task name (default: the folder or file name)")
    lr.add_argument("--data-root", help="where the run's benchmark data is, to re-evaluate its tasks")
    lr.add_argument("--device", help="cpu (default) or cuda")
    lr.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    lr.add_argument("--no-plots", action="store_true", help="tables only: no PNG figures beside report.md")
    lr.add_argument("--again", action="store_true",
                    help="learn data that a learned task already holds (same inputs and labels) as a new task; "
                         "refused otherwise, so that a retry after a stopped `learn` does not learn it twice")
    _retest(lr)
    lr.add_argument("--log", action="append", choices=["tensorboard"], default=[],
                    help="also write TensorBoard event files to MODEL_DIR/tensorboard/ (OUT/log.csv is always appended)")
    _threads(lr)
    pr = sub.add_parser("predict", help="classify raw files (images, or an .npz of raw arrays) with one learned task",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Classify raw inputs with task T: image files of any size and format are "
                        "converted to the task's channels, resized and normalised as its training data was (the "
                        "checkpoint records how); an .npz file's x array holds raw images (uint8, or floats in "
                        "[0, 1]) or vectors. Prints one line per input: file, class name, probability.",
                        epilog="examples:\n  unforget predict runs/digits --task 2 photo1.png photo2.jpg\n"
                        "  unforget predict runs/digits --task 2 batch.npz --json")
    _served_task(pr)
    pr.add_argument("files", nargs="+", help="image files, or .npz files with an array x")
    pr.add_argument("--json", action="store_true",
                    help='one JSON object per line: {"input": FILE or FILE.npz[i], "index": class index in the '
                         'task, "class": class name, "probability": softmax probability}')
    ex = sub.add_parser("export", help="write one learned task as a plain network (PyTorch, TorchScript, ONNX)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Task T's network with its effective weights materialised and cut to its width, "
                        "built from plain Conv2d / Linear / BatchNorm layers: TorchScript and ONNX files run "
                        "without unforget. Its class names, input shape and normalisation go into the file's "
                        "metadata. Logits equal the served ones (PyTorch, TorchScript) or agree within 1e-5 (ONNX).",
                        epilog="example:\n  unforget export runs/digits --task 2 --format onnx --out task2.onnx")
    _served_task(ex)
    ex.add_argument("--format", "-f", default="torchscript", choices=["pytorch", "torchscript", "onnx"],
                    help="file format (default: torchscript)")
    ex.add_argument("--out", "-o", required=True, help="output file")
    return p


def _served_task(p: argparse.ArgumentParser) -> None:
    """The arguments naming one learned task of a trained model (`predict`, `export`)."""
    p.add_argument("model_dir", help="folder of a run (holds checkpoint.safetensors)")
    p.add_argument("--task", "-t", type=int, required=True, help="task id (1-based)")
    _threads(p)


def _overrides(a: argparse.Namespace) -> dict:
    o: dict = {}
    flags = {"epochs": a.epochs, "batch_size": a.batch_size, "optimizer": a.optimizer, "lr": a.lr,
             "precision": a.precision, "memory_format": a.memory_format, "compile": a.compile,
             "compile_mode": a.compile_mode, "deterministic": a.deterministic}
    if a.compile_mode is not None:
        flags["compile"] = True
    train = {k: v for k, v in flags.items() if v is not None}
    if train:
        o["train"] = train
    model = {k: v for k, v in {"width": a.width, "name": a.model}.items() if v is not None}
    if model:
        o["model"] = model
    if a.seed is not None:
        o["seed"] = a.seed
    if a.device is not None:
        o["device"] = a.device
    if getattr(a, "pretrained", None):
        o["pretrained"] = {"file": a.pretrained}
    if getattr(a, "benchmark_option", None):
        import yaml

        opts = {}
        for item in a.benchmark_option:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ConfigError(f"--benchmark-option takes KEY=VALUE, got {item!r}")
            opts[key.strip()] = yaml.safe_load(value) if value.strip() else None
        o.setdefault("benchmark", {})["options"] = opts
    return o


def _list() -> None:
    from unforget.data import list_benchmarks
    from unforget.methods import list_methods
    from unforget.models import list_models

    for title, items in (("benchmarks", list_benchmarks()), ("methods", list_methods()), ("models", list_models())):
        print(f"{title}:")
        for k, v in items.items():
            print(f"  {k:<18} {v}")


def _is_main_process() -> bool:
    """Whether this process prints: not one of torchrun's processes other than rank 0."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _say(text: str) -> None:
    if _is_main_process():
        print(text)


def _benchmark_of_data_root(a: argparse.Namespace) -> None:
    """``--data-root`` without ``--benchmark`` (nor a config file that could name one): take the
    own-data benchmark the folder holds (task folders, ``.npz`` files) and say so, or stop with
    one line naming the flag to add; the embedded digits never silently replace the user's data."""
    if a.benchmark is not None or a.config is not None or a.data_root is None:
        return
    from unforget.data.custom.folders import recognise

    kind = recognise(a.data_root)
    if kind is None:
        raise ConfigError(f"--data-root {a.data_root} given without --benchmark, and it holds no task folders or "
                          ".npz files; add --benchmark (image-folder, npz, or a dataset benchmark such as "
                          "split-cifar10 for the datasets in it; `unforget list` lists them)")
    a.benchmark = kind
    _say(f"--data-root {a.data_root} holds {'.npz task files' if kind == 'npz' else 'task folders'}: "
         f"--benchmark {kind}")


def _run(a: argparse.Namespace) -> None:
    from unforget.autoconfig import resolve_for_data
    from unforget.runner import load_benchmark, run
    from unforget.training.phases import PhaseClock

    clock = PhaseClock()
    _benchmark_of_data_root(a)
    with clock.phase("data_loading"):
        cfg, bench, auto = resolve_for_data(a.benchmark, a.method, preset_name=a.preset, config_file=a.config,
                                            overrides=_overrides(a), say=_say,
                                            load=lambda c: load_benchmark(c, a.data_root, a.download))
    if a.config is not None:  # a bad method option is reported against the file, before anything runs
        from unforget.methods.base import check_method_sections

        check_method_sections(cfg, a.config)
    out = a.out_dir = a.out or f"runs/{cfg.benchmark.name}-{cfg.method}"
    results = run(cfg, data_root=a.data_root, out_dir=out, resume=a.resume, progress=not a.quiet, download=a.download,
                  overwrite=a.overwrite, benchmark=bench, log=("csv", *a.log),
                  notes={"auto_config": auto.record()} if auto else None, retest=a.retest, clock=clock)
    if not _is_main_process():
        return
    from unforget.evaluation import markdown_report

    print(markdown_report(results))
    _draw_figures(out, a)
    print(f"results: {out}/results.json, report: {out}/report.md (figures beside it), "
          f"checkpoint: {out}/checkpoint.safetensors")


def _draw_figures(folder: str, a: argparse.Namespace) -> None:
    """One run's figures (accuracy over tasks, the R heat map, size, capacity) beside its
    report.md, and their links in it, unless ``--no-plots``; a figure that cannot be drawn costs
    one line, never the run (:func:`unforget.compare.write_report`)."""
    if getattr(a, "no_plots", False):
        return
    from unforget.compare import write_report

    write_report(folder, plots=True, say=_say)


def _compare(a: argparse.Namespace) -> None:
    from unforget.compare import compare

    _benchmark_of_data_root(a)
    bench = a.benchmark or "digits"
    out = a.out or f"runs/compare-{bench}"
    compare(bench, a.methods.split(","), out, preset=a.preset, config_file=a.config, overrides=_overrides(a),
            data_root=a.data_root, download=a.download, progress=not a.quiet and _is_main_process(),
            log=("csv", *a.log), say=_say, retest=a.retest, plots=not a.no_plots)
    if not _is_main_process():
        return
    print(Path(out, "report.md").read_text())
    print(f"report: {out}/report.md (figures beside it); per-method results: {out}/METHOD/results.json")


def _report(a: argparse.Namespace) -> None:
    from unforget.compare import write_report

    path = write_report(a.folder, plots=not a.no_plots)
    print(path.read_text())
    print(f"report: {path}")


def _interrupted(a: Optional[argparse.Namespace]) -> str:
    """The line printed on Ctrl-C: ``--resume`` is advised only when a checkpoint exists to
    resume from."""
    command = getattr(a, "command", None)
    if command == "run":
        out = getattr(a, "out_dir", None) or a.out
        if out is None and a.config is None:  # the default of _run, known without the configuration
            out = f"runs/{a.benchmark or 'digits'}-{a.method or 'cpg'}"
        if out is None:
            return "interrupted"
        if Path(out, CHECKPOINT).is_file():
            return f"interrupted; rerun with --resume to continue from the last finished task (checkpoint in {out})"
        return f"interrupted before the first task finished; there is no checkpoint in {out} to resume from"
    if command == "compare":
        out = Path(a.out or f"runs/compare-{a.benchmark or 'digits'}")
        if any(p.is_file() for p in out.glob(f"*/{CHECKPOINT}")):
            return ("interrupted; rerun the same command to continue (finished methods are reused, an "
                    "interrupted one resumes from its last finished task)")
        return f"interrupted before any task finished; there is no checkpoint in {out} to resume from"
    return "interrupted"


def _learn(a: argparse.Namespace) -> None:
    from unforget.lifelong import learn_task

    results = learn_task(a.model_dir, a.data, name=a.name, data_root=a.data_root, device=a.device,
                         progress=not a.quiet, log=("csv", *a.log), retest=a.retest, again=a.again)
    row = results["accuracy_matrix"][-1]
    cells = ", ".join("not re-evaluated" if v is None else f"{100 * v:.2f} %" for v in row)
    print(f"task {len(row)} learned; test accuracy per task now: {cells}")
    _draw_figures(a.model_dir, a)
    print(f"results: {a.model_dir}/results.json, report: {a.model_dir}/report.md (figures beside it)")


def _predict(a: argparse.Namespace) -> None:
    import json

    import numpy as np

    from unforget.errors import InputError
    from unforget.learner import Learner

    learner = Learner.open(a.model_dir)
    for f in a.files:
        if f.lower().endswith(".npz"):
            try:
                with np.load(f, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read {f}: {e}") from None
            if "x" not in arrays:
                raise InputError(f"{f} has no array x (it holds {', '.join(arrays)})")
            items = list(arrays["x"])
            labels = [f"{f}[{i}]" for i in range(len(items))]
        else:
            items, labels = [f], [f]
        if not items:
            continue
        pred = learner.predict_raw(items, a.task)
        for label, c, name, p in zip(labels, pred.classes.tolist(), pred.names, pred.probabilities.tolist()):
            if a.json:
                print(json.dumps({"input": label, "index": c, "class": name, "probability": round(p, 6)}))
            else:
                print(f"{label}\t{name}\t{p:.4f}")


def _export(a: argparse.Namespace) -> None:
    from unforget.learner import Learner

    learner = Learner.open(a.model_dir)
    path = learner.export_file(a.task, a.format, a.out)
    print(f"task {a.task} ({learner.tasks[a.task - 1]['name']}) written to {path} ({a.format})")


def _set_threads(n: Optional[int]) -> None:
    """``torch.set_num_threads(n)`` for ``--threads N``."""
    if n is None:
        return
    from unforget.errors import ConfigError

    if n < 1:
        raise ConfigError(f"--threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``unforget``; returns the exit status: 0 ok, 2 a user error (one line
    ``unforget: error: ...`` on stderr, no traceback), 130 interrupted (Ctrl-C, one line)."""
    a = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        if not argv:
            argv = ["run"]
        parser = _parser()
        a = parser.parse_args(argv)
        _set_threads(getattr(a, "threads", None))
        if a.command == "list":
            _list()
        elif a.command == "run":
            _run(a)
        elif a.command == "compare":
            _compare(a)
        elif a.command == "report":
            _report(a)
        elif a.command == "learn":
            _learn(a)
        elif a.command == "export":
            _export(a)
        elif a.command == "predict":
            _predict(a)
        else:
            parser.print_help()
    except UnforgetError as e:
        print(f"unforget: error: {' '.join(str(e).splitlines())}", file=sys.stderr)  # always one line
        return 2
    except Exception as e:  # a full disk under any other writer (training log, TensorBoard): one line too
        from unforget.errors import is_disk_full

        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None)
        print(f"unforget: error: no space left on the disk{f' holding {where}' if where else ''}; the checkpoint "
              "of the last finished task is intact: free space, then run the command again (--resume continues "
              "a run)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unforget: {_interrupted(a)}", file=sys.stderr)
        return 130
    finally:
        if "unforget.distributed" in sys.modules:  # leave torchrun's process group
            sys.modules["unforget.distributed"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
