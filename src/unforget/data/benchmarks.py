"""Benchmark registry and the built-in task sequences.

A *builder* turns :class:`BuildOptions` into a :class:`~unforget.data.task.Benchmark` (or a list
of tasks); :func:`register_benchmark` adds one under a name, :func:`build_benchmark` validates the
options, calls the builder, then applies ``task_order`` and ``n_tasks``.

Splitting rules shared by every built-in builder:

- the test split of a task is every official test image of its classes (``digits``, which has no
  official test set, holds out a fixed stratified 25 % once, independent of ``seed``);
- ``max_train_per_class`` is applied first: each class keeps a seeded random subset of at most that
  many training images (train + validation together);
- validation is then held out of those training images per class (stratified): ``round(n *
  val_fraction)`` images of a class of ``n`` (at least 1 when ``n >= 2``, never all of them). The
  draw depends only on ``seed``, the dataset and the class, so a class gets the same validation
  images in every benchmark that uses it;
- labels inside a task are remapped to ``0..C-1`` in the task's class order.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch

from unforget.data.readers import read_cifar10, read_cifar100_with_coarse, read_mnist, resolve_root
from unforget.data.readers._common import PathLike
from unforget.data.task import Benchmark, Split, Task
from unforget.data.transforms import ImageTransform
from unforget.errors import DataError, RegistryError, did_you_mean

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3759,)
DIGITS_TEST_FRACTION = 0.25
CIFAR10_CIFAR100_MAX_TASKS = 11


@dataclass(frozen=True)
class BuildOptions:
    """Validated options handed to a builder.

    Attributes:
        data_root: folder that holds the datasets (already resolved: ``$UNFORGET_DATA_ROOT`` or
            ``./data`` when the caller gave none).
        seed: seed of every random choice (validation split, subsampling, permutations).
        val_fraction: share of each class's training images held out for validation, in ``(0, 1)``.
        class_order: original class indices, in order; consecutive groups form the tasks
            (``None``: the builder's default order).
        n_tasks: number of tasks asked for (``None``: the builder's default).
        max_train_per_class: cap on the training images (train + val) kept per class, or ``None``.
        download: let readers fetch missing official archives.
        options: the benchmark's own options (``benchmark.options`` in a config, ``--benchmark-option
            KEY=VALUE``), only those it declared when registered (e.g. ``facial``'s ``age_fold``).
    """

    data_root: Path
    seed: int = 0
    val_fraction: float = 0.1
    class_order: Optional[tuple[int, ...]] = None
    n_tasks: Optional[int] = None
    max_train_per_class: Optional[int] = None
    download: bool = False
    options: dict = field(default_factory=dict, hash=False, compare=False)


Builder = Callable[[BuildOptions], Union[Benchmark, "list[Task]"]]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    description: str
    options: tuple[str, ...] = ()


_REGISTRY: dict[str, _Entry] = {}


# ----------------------------------------------------------------------------- registry
def register_benchmark(name: str, description: str, *, overwrite: bool = False,
                       options: tuple[str, ...] = ()) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(options: BuildOptions) -> Benchmark | list[Task]`` as ``name``.

    The builder returns its full default sequence; :func:`build_benchmark` then applies
    ``task_order`` and cuts to ``n_tasks`` (builders whose length is set by ``n_tasks``, such as
    ``permuted-mnist``, build exactly ``options.n_tasks`` tasks themselves). ``options`` names
    the benchmark's own options (``BuildOptions.options``); any other is refused by
    :func:`build_benchmark`.

    Raises:
        RegistryError: ``name`` is already registered and ``overwrite`` is false.
    """
    def deco(builder: Builder) -> Builder:
        if name in _REGISTRY and not overwrite:
            raise RegistryError(f"benchmark '{name}' is already registered; pick another name or pass overwrite=True")
        _REGISTRY[name] = _Entry(builder, description, tuple(options))
        return builder

    return deco


def list_benchmarks() -> dict[str, str]:
    """Registered benchmarks: ``{name: one-line description}`` in registration order."""
    return {k: e.description for k, e in _REGISTRY.items()}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v, what: str) -> Optional[tuple[int, ...]]:
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise DataError(f"{what} must be a list of integers, got {v!r}")
    out = tuple(int(i) if hasattr(i, "__index__") and not isinstance(i, bool) else i for i in v)
    if not all(_is_int(i) for i in out):
        raise DataError(f"{what} must be a list of integers, got {list(v)!r}")
    return out


def build_benchmark(name: str, data_root: Optional[PathLike] = None, *, seed: int = 0, val_fraction: float = 0.1,
                    class_order: Optional[Sequence[int]] = None, task_order: Optional[Sequence[int]] = None,
                    n_tasks: Optional[int] = None, max_train_per_class: Optional[int] = None,
                    download: bool = False, shuffle_tasks: bool = False,
                    options: Optional[dict] = None) -> Benchmark:
    """Build the registered benchmark ``name``.

    Args:
        name: registry name (see :func:`list_benchmarks`), e.g. ``"split-cifar100"``.
        data_root: folder with the datasets (default ``$UNFORGET_DATA_ROOT`` or ``./data``; unused by
            ``digits``).
        seed: seed of the validation split, subsampling and permutations (an ``int``).
        val_fraction: share of each class's training images held out for validation, in ``(0, 1)``.
        class_order: original class indices in the order they are cut into tasks (consecutive
            groups of the benchmark's task size; a subset is allowed, each class at most once).
            ``None`` keeps the default order. Not supported by ``permuted-mnist`` and
            ``cifar10-cifar100``.
        task_order: 0-based positions in the builder's sequence, a permutation of ``0..K-1``; the
            tasks are reordered (and renumbered ``1..K``) before ``n_tasks`` cuts the sequence.
        n_tasks: number of tasks: the first ``n_tasks`` of the (reordered) sequence, or, for
            ``permuted-mnist`` / ``cifar10-cifar100``, how many the builder generates.
        max_train_per_class: keep at most this many training images per class (``>= 2``; train +
            validation together, chosen with ``seed``), to keep CPU runs small.
        download: let readers fetch missing official archives (needs the internet).
        shuffle_tasks: draw the task order from ``seed`` (a permutation of the builder's
            sequence, the same for the same seed); not together with ``task_order``.
        options: the benchmark's own options (see :func:`register_benchmark`), e.g.
            ``{"age_fold": 2}`` for ``facial``.

    Returns:
        a :class:`~unforget.data.task.Benchmark` whose ``info`` records the options and, under
        ``"tasks"``, each task's name and original class indices.

    Raises:
        RegistryError: unknown ``name`` (the message lists the known names).
        DataError: an option is out of range, or the dataset files are missing or corrupt.
    """
    if name not in _REGISTRY:
        raise RegistryError(f"unknown benchmark '{name}'{did_you_mean(name, _REGISTRY)}; "
                            f"known benchmarks: {', '.join(_REGISTRY)}")
    if not _is_int(seed):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be a number strictly between 0 and 1, got {val_fraction!r}")
    if n_tasks is not None and (not _is_int(n_tasks) or n_tasks < 1):
        raise DataError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
    if max_train_per_class is not None and (not _is_int(max_train_per_class) or max_train_per_class < 2):
        raise DataError(f"max_train_per_class must be an integer >= 2 (one training and one validation image), "
                        f"got {max_train_per_class!r}")
    corder = _int_list(class_order, "class_order")
    torder = _int_list(task_order, "task_order")
    if corder is not None and (len(corder) == 0 or len(set(corder)) != len(corder) or min(corder) < 0):
        raise DataError(f"class_order must list distinct non-negative class indices, got {list(corder)}")
    if torder is not None and (len(set(torder)) != len(torder) or min(torder, default=0) < 0):
        raise DataError(f"task_order must be a permutation of 0-based task positions (each once), got {list(torder)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(_REGISTRY[name].options))
    if unknown:
        have = ", ".join(_REGISTRY[name].options) or "none"
        raise DataError(f"benchmark '{name}' has no option {unknown[0]!r}; its options: {have}")
    opts = BuildOptions(data_root=resolve_root(data_root), seed=seed, val_fraction=float(val_fraction),
                        class_order=corder, n_tasks=n_tasks, max_train_per_class=max_train_per_class,
                        download=bool(download), options=options)
    built = _REGISTRY[name].builder(opts)
    if isinstance(built, Benchmark):
        tasks, info, input_shape = list(built.tasks), dict(built.info), tuple(built.input_shape)
    else:
        tasks, info = list(built), {}
        input_shape = tuple(tasks[0].input_shape) if tasks else ()
    if not tasks:
        raise DataError(f"benchmark '{name}' built no tasks; check class_order and n_tasks")
    per_task = list(info.pop("tasks", [{"name": t.name} for t in tasks]))
    if shuffle_tasks:
        if torder is not None:
            raise DataError("give either task_order or shuffle_tasks, not both")
        gen = torch.Generator().manual_seed(derive_seed(seed, "task-order", name))
        torder = tuple(int(i) for i in torch.randperm(len(tasks), generator=gen))
    if torder is not None:
        if sorted(torder) != list(range(len(tasks))):
            raise DataError(f"task_order must be a permutation of 0..{len(tasks) - 1} (0-based positions in "
                            f"the {len(tasks)}-task sequence of '{name}'), got {list(torder)}")
        tasks = [tasks[i] for i in torder]
        per_task = [per_task[i] for i in torder]
    if n_tasks is not None:
        if n_tasks > len(tasks):
            raise DataError(f"n_tasks={n_tasks} but '{name}' has {len(tasks)} tasks with these options; "
                            f"use n_tasks in 1..{len(tasks)}")
        tasks, per_task = tasks[:n_tasks], per_task[:n_tasks]
    tasks = [dataclasses.replace(t, id=i + 1) for i, t in enumerate(tasks)]
    for t in tasks:
        if len(t.train) == 0 or len(t.val) == 0:
            raise DataError(f"task {t.id} ({t.name}) of '{name}' has {len(t.train)} training and {len(t.val)} "
                            "validation images; raise max_train_per_class or check the data")
    info = {"name": name, "seed": seed, "val_fraction": float(val_fraction),
            "class_order": None if corder is None else list(corder),
            "task_order": None if torder is None else list(torder), "n_tasks": len(tasks),
            "max_train_per_class": max_train_per_class, "data_root": str(opts.data_root),
            **({"options": options} if options else {}), **info,
            "tasks": per_task}
    return Benchmark(name=name, tasks=tasks, input_shape=input_shape, info=info)


# ----------------------------------------------------------------------------- splitting helpers
def derive_seed(*parts) -> int:
    """A 63-bit seed derived from ``parts`` (stable across processes and platforms)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def _n_val(n: int, val_fraction: float) -> int:
    if n < 2:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def train_val_indices(y: torch.Tensor, classes: Sequence[int], opts: BuildOptions, salt: str
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded train / validation indices into the training pool ``y``.

    For each class ``c`` of ``classes``: shuffle its indices with a generator seeded by
    ``(opts.seed, salt, c)``, keep the first ``opts.max_train_per_class`` (if set), hold out the
    first ``round(n * opts.val_fraction)`` of those (at least 1 when ``n >= 2``, at most ``n - 1``)
    for validation and keep the rest for training.

    Returns:
        ``(train_idx, val_idx)``: sorted ``int64`` index tensors, disjoint.
    """
    train, val = [], []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        g = torch.Generator().manual_seed(derive_seed(opts.seed, salt, int(c)))
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        if opts.max_train_per_class is not None:
            idx = idx[:opts.max_train_per_class]
        k = _n_val(idx.numel(), opts.val_fraction)
        val.append(idx[:k])
        train.append(idx[k:])
    def cat(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.int64)

    return cat(train), cat(val)


def _remap(y: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    lut = torch.full((max(int(y.max()) if y.numel() else 0, max(classes)) + 1,), -1, dtype=torch.int64)
    lut[torch.as_tensor(list(classes), dtype=torch.int64)] = torch.arange(len(classes))
    return lut[y]


def make_task(task_id: int, name: str, classes: Sequence[int], class_names: Sequence[str],
              train_pool: tuple[torch.Tensor, torch.Tensor], test_pool: tuple[torch.Tensor, torch.Tensor],
              opts: BuildOptions, salt: str, transform: Callable[..., torch.Tensor],
              input_shape: Sequence[int]) -> Task:
    """A task over the original classes ``classes`` of a dataset.

    Args:
        task_id: 1-based id (renumbered later by :func:`build_benchmark`).
        name: readable task name.
        classes: original class indices, in task label order (task label ``j`` = ``classes[j]``).
        class_names: names of all original classes of the dataset.
        train_pool, test_pool: ``(x, y)`` with original labels; ``x`` ``(N, ...)``, ``y`` ``int64`` ``(N,)``.
        opts: the build options (seed, validation share, subsampling).
        salt: dataset name used to derive the validation draw (see :func:`train_val_indices`).
        transform, input_shape: stored on the task.

    Returns:
        a :class:`Task` with train / val held out of ``train_pool`` and test = every test image of
        ``classes``; labels remapped to ``0..len(classes)-1``.
    """
    x_tr, y_tr = train_pool
    x_te, y_te = test_pool
    tr, va = train_val_indices(y_tr, classes, opts, salt)
    te = torch.isin(y_te, torch.as_tensor(list(classes), dtype=y_te.dtype)).nonzero().flatten()
    return Task(id=task_id, name=name, classes=[class_names[c] for c in classes],
                train=Split(x_tr[tr], _remap(y_tr[tr], classes)), val=Split(x_tr[va], _remap(y_tr[va], classes)),
                test=Split(x_te[te], _remap(y_te[te], classes)), transform=transform, input_shape=tuple(input_shape))


def _groups(opts: BuildOptions, n_classes: int, per_task: int, default: list[list[int]], bench: str) -> list[list[int]]:
    if opts.class_order is None:
        return default
    order = list(opts.class_order)
    if max(order) >= n_classes:
        raise DataError(f"class_order for '{bench}' must hold class indices in 0..{n_classes - 1}, got {max(order)}")
    if len(order) % per_task:
        raise DataError(f"class_order for '{bench}' must list a multiple of {per_task} classes "
                        f"({per_task} per task), got {len(order)}")
    return [order[i:i + per_task] for i in range(0, len(order), per_task)]


def _no_class_order(opts: BuildOptions, bench: str) -> None:
    if opts.class_order is not None:
        raise DataError(f"'{bench}' does not take class_order (its tasks are fixed); leave it unset")


def _class_split_benchmark(bench: str, prefix: str, groups: list[list[int]], names: Sequence[str],
                           train_pool, test_pool, opts: BuildOptions, salt: str, transform,
                           input_shape: tuple[int, ...], info: Optional[dict] = None) -> Benchmark:
    tasks, per_task = [], []
    for i, g in enumerate(groups):
        tname = f"{prefix} ({', '.join(names[c] for c in g)})"
        tasks.append(make_task(i + 1, tname, g, names, train_pool, test_pool, opts, salt, transform, input_shape))
        per_task.append({"name": tname, "classes": [int(c) for c in g]})
    return Benchmark(name=bench, tasks=tasks, input_shape=input_shape, info={**(info or {}), "tasks": per_task})


def _pairs(n_classes: int, per_task: int) -> list[list[int]]:
    return [list(range(i, i + per_task)) for i in range(0, n_classes, per_task)]


# ----------------------------------------------------------------------------- built-in builders
@functools.lru_cache(maxsize=1)
def _digits_pools() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data).reshape(-1, 1, 8, 8).mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target).to(torch.int64)
    test = []
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(derive_seed("digits-test", c)))]
        test.append(idx[:round(idx.numel() * DIGITS_TEST_FRACTION)])
    is_test = torch.zeros(y.numel(), dtype=torch.bool)
    is_test[torch.cat(test)] = True
    return (x[~is_test], y[~is_test]), (x[is_test], y[is_test])


@register_benchmark("digits", "5 x 2-class tasks of scikit-learn's 8x8 digits (embedded, no download; the default)")
def build_digits(opts: BuildOptions) -> Benchmark:
    """``digits``: :func:`sklearn.datasets.load_digits` (1,797 8x8 grey images, bundled with
    scikit-learn) cut into 5 tasks of 2 classes (0/1, 2/3, ...).

    Pixel values ``0..16`` are scaled to ``uint8`` ``0..255``; a fixed stratified 25 % is the test
    split (same for every ``seed``); input shape ``(1, 8, 8)``; no augmentation.
    """
    train, test = _digits_pools()
    names = [str(i) for i in range(10)]
    tf = ImageTransform(DIGITS_MEAN, DIGITS_STD)
    groups = _groups(opts, 10, 2, _pairs(10, 2), "digits")
    b = _class_split_benchmark("digits", "digits", groups, names, train, test, opts, "digits", tf, (1, 8, 8),
                               {"source": "sklearn.datasets.load_digits", "test_fraction": DIGITS_TEST_FRACTION})
    b.info["data_root"] = None
    return b


@register_benchmark("split-mnist", "MNIST cut into 5 x 2-class tasks (0/1, 2/3, ...), 28x28 inputs")
def build_split_mnist(opts: BuildOptions) -> Benchmark:
    """``split-mnist``: MNIST (official IDX files) in 5 tasks of 2 classes; input ``(1, 28, 28)``,
    MNIST mean/std normalisation, no augmentation (models flatten as needed)."""
    xtr, ytr, names = read_mnist(opts.data_root, "train", download=opts.download)
    xte, yte, _ = read_mnist(opts.data_root, "test", download=opts.download)
    tf = ImageTransform(MNIST_MEAN, MNIST_STD)
    groups = _groups(opts, 10, 2, _pairs(10, 2), "split-mnist")
    return _class_split_benchmark("split-mnist", "mnist", groups, names, (xtr, ytr), (xte, yte), opts, "mnist",
                                  tf, (1, 28, 28))


@register_benchmark("permuted-mnist", "MNIST with a fixed pixel permutation per task (task 1 unpermuted), "
                                      "10 classes each, flattened 784 inputs (Golkar et al. 2019)")
def build_permuted_mnist(opts: BuildOptions) -> Benchmark:
    """``permuted-mnist`` (Golkar et al. 2019, Sec. 3.1; Goodfellow et al. 2013): ``n_tasks`` tasks
    (default 10) of the 10 MNIST digits; task 1 sees the unpermuted images, task ``k >= 2`` a fixed
    pixel permutation drawn from ``(seed, k)``. Inputs are flattened, shape ``(784,)``.

    Memory: the ``uint8`` images and the train / validation split are stored once and shared by
    every task (the same tensors); each task's permutation lives in its transform.
    """
    _no_class_order(opts, "permuted-mnist")
    n = 10 if opts.n_tasks is None else opts.n_tasks
    xtr, ytr, names = read_mnist(opts.data_root, "train", download=opts.download)
    xte, yte, _ = read_mnist(opts.data_root, "test", download=opts.download)
    tr, va = train_val_indices(ytr, range(10), opts, "mnist")
    x_train, y_train, x_val, y_val = xtr[tr], ytr[tr], xtr[va], ytr[va]
    d = int(xtr[0].numel()) if xtr.shape[0] else 784
    tasks, per_task = [], []
    for k in range(1, n + 1):
        seed_k = None if k == 1 else derive_seed(opts.seed, "permuted-mnist", k)
        perm = None if seed_k is None else torch.randperm(d, generator=torch.Generator().manual_seed(seed_k))
        tf = ImageTransform(MNIST_MEAN, MNIST_STD, permutation=perm, flatten=True)
        tname = f"permuted-mnist p{k}" + (" (unpermuted)" if k == 1 else "")
        tasks.append(Task(id=k, name=tname, classes=list(names), train=Split(x_train, y_train),
                          val=Split(x_val, y_val), test=Split(xte, yte), transform=tf, input_shape=(d,)))
        per_task.append({"name": tname, "classes": list(range(10)), "permutation_seed": seed_k})
    return Benchmark(name="permuted-mnist", tasks=tasks, input_shape=(d,), info={"tasks": per_task})


@register_benchmark("split-cifar10", "CIFAR-10 cut into 5 x 2-class tasks, crop + flip augmentation")
def build_split_cifar10(opts: BuildOptions) -> Benchmark:
    """``split-cifar10``: CIFAR-10 in 5 tasks of 2 classes (airplane/automobile, bird/cat, ...);
    input ``(3, 32, 32)``; training augmentation: random crop (padding 4) and horizontal flip;
    CIFAR-10 mean/std normalisation."""
    xtr, ytr, names = read_cifar10(opts.data_root, "train", download=opts.download)
    xte, yte, _ = read_cifar10(opts.data_root, "test", download=opts.download)
    tf = ImageTransform(CIFAR10_MEAN, CIFAR10_STD, crop_padding=4, hflip=True)
    groups = _groups(opts, 10, 2, _pairs(10, 2), "split-cifar10")
    return _class_split_benchmark("split-cifar10", "cifar10", groups, names, (xtr, ytr), (xte, yte), opts,
                                  "cifar10", tf, (3, 32, 32))


def superclass_groups(fine: torch.Tensor, coarse: torch.Tensor, n_fine: int = 100,
                      n_coarse: int = 20) -> list[list[int]]:
    """Fine classes of each superclass: ``groups[s]`` = sorted fine labels whose coarse label is ``s``.

    Args:
        fine, coarse: ``int64`` ``(N,)`` labels of the same images.

    Raises:
        DataError: a fine class is absent, or maps to more than one superclass, or a superclass is empty.
    """
    coarse_of = torch.full((n_fine,), -1, dtype=torch.int64)
    coarse_of[fine] = coarse
    if bool((coarse_of[fine] != coarse).any()):
        raise DataError("CIFAR-100 labels are corrupt: a fine class belongs to more than one superclass")
    if bool((coarse_of < 0).any()):
        missing = (coarse_of < 0).nonzero().flatten().tolist()
        raise DataError(f"CIFAR-100 training data has no image of fine class(es) {missing[:10]}")
    groups = [(coarse_of == s).nonzero().flatten().tolist() for s in range(n_coarse)]
    empty = [s for s, g in enumerate(groups) if not g]
    if empty:
        raise DataError(f"CIFAR-100 training data has no fine class in superclass(es) {empty}")
    return groups


@register_benchmark("split-cifar100", "CIFAR-100 as 20 x 5-class tasks, one per superclass (Hung et al. 2019)")
def build_split_cifar100(opts: BuildOptions) -> Benchmark:
    """``split-cifar100`` (Hung et al. 2019, Sec. 4.1): 20 tasks, task ``i`` = the 5 fine classes of
    CIFAR-100 superclass ``i - 1`` (coarse labels in order 0..19, fine classes in label order);
    input ``(3, 32, 32)``; random crop (padding 4) + horizontal flip; CIFAR-100 mean/std.

    With ``class_order`` the superclass grouping is replaced by consecutive groups of 5 of the
    given fine classes.
    """
    xtr, ytr, names, ctr, coarse_names = read_cifar100_with_coarse(opts.data_root, "train", download=opts.download)
    xte, yte, _, _, _ = read_cifar100_with_coarse(opts.data_root, "test", download=opts.download)
    tf = ImageTransform(CIFAR100_MEAN, CIFAR100_STD, crop_padding=4, hflip=True)
    if opts.class_order is None:
        groups = superclass_groups(ytr, ctr)
        tasks, per_task = [], []
        for s, g in enumerate(groups):
            tname = f"cifar100 {coarse_names[s]} ({', '.join(names[c] for c in g)})"
            tasks.append(make_task(s + 1, tname, g, names, (xtr, ytr), (xte, yte), opts, "cifar100", tf, (3, 32, 32)))
            per_task.append({"name": tname, "classes": g, "superclass": s})
        return Benchmark(name="split-cifar100", tasks=tasks, input_shape=(3, 32, 32),
                         info={"grouping": "superclass", "tasks": per_task})
    groups = _groups(opts, 100, 5, [], "split-cifar100")
    return _class_split_benchmark("split-cifar100", "cifar100", groups, names, (xtr, ytr), (xte, yte), opts,
                                  "cifar100", tf, (3, 32, 32), {"grouping": "class_order"})


@register_benchmark("cifar10-cifar100", "CIFAR-10 (10 classes) then CIFAR-100 in 10-class tasks, 6 tasks by "
                                        "default, up to 11 (Golkar et al. 2019)")
def build_cifar10_cifar100(opts: BuildOptions) -> Benchmark:
    """``cifar10-cifar100`` (Golkar et al. 2019, Sec. 3.2; Zenke et al. 2017): task 1 = all of
    CIFAR-10, tasks 2..n = CIFAR-100 fine classes 0-9, 10-19, ... (``n_tasks`` default 6, at most
    11); input ``(3, 32, 32)``; random crop (padding 4) + flip; each dataset its own mean/std.

    Raises:
        DataError: ``n_tasks > 11`` or ``class_order`` given.
    """
    _no_class_order(opts, "cifar10-cifar100")
    n = 6 if opts.n_tasks is None else opts.n_tasks
    if n > CIFAR10_CIFAR100_MAX_TASKS:
        raise DataError(f"n_tasks={n} but 'cifar10-cifar100' has at most {CIFAR10_CIFAR100_MAX_TASKS} tasks "
                        "(CIFAR-10 + 10 CIFAR-100 tasks); use n_tasks in 1..11")
    xtr, ytr, names10 = read_cifar10(opts.data_root, "train", download=opts.download)
    xte, yte, _ = read_cifar10(opts.data_root, "test", download=opts.download)
    tf10 = ImageTransform(CIFAR10_MEAN, CIFAR10_STD, crop_padding=4, hflip=True)
    t1 = make_task(1, "cifar10 (all 10 classes)", list(range(10)), names10, (xtr, ytr), (xte, yte), opts,
                   "cifar10", tf10, (3, 32, 32))
    tasks, per_task = [t1], [{"name": t1.name, "dataset": "cifar10", "classes": list(range(10))}]
    del xtr, ytr, xte, yte
    if n > 1:
        xtr, ytr, names100 = read_cifar100_with_coarse(opts.data_root, "train", download=opts.download)[:3]
        xte, yte, _ = read_cifar100_with_coarse(opts.data_root, "test", download=opts.download)[:3]
        tf100 = ImageTransform(CIFAR100_MEAN, CIFAR100_STD, crop_padding=4, hflip=True)
        for k in range(2, n + 1):
            g = list(range(10 * (k - 2), 10 * (k - 1)))
            tname = f"cifar100 classes {g[0]}-{g[-1]}"
            tasks.append(make_task(k, tname, g, names100, (xtr, ytr), (xte, yte), opts, "cifar100", tf100, (3, 32, 32)))
            per_task.append({"name": tname, "dataset": "cifar100", "classes": g})
    return Benchmark(name="cifar10-cifar100", tasks=tasks, input_shape=(3, 32, 32), info={"tasks": per_task})
