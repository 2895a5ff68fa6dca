"""The registered own-data benchmarks ``image-folder`` and ``npz`` (built on import)."""
from __future__ import annotations

from unforget.data.benchmarks import BuildOptions, _no_class_order, register_benchmark
from unforget.data.custom.arrays import _array_benchmark, _npz_files, _read_npz
from unforget.data.custom.assembly import _benchmark
from unforget.data.custom.folders import _image_folder_kwargs, _image_folder_tasks
from unforget.data.task import Benchmark


@register_benchmark("image-folder", "your images: --data-root holds one folder per task, one subfolder per class "
                                    "(any size/format; 32x32 RGB inputs, 20 % test held out unless test/ exists)")
def build_image_folder(opts: BuildOptions) -> Benchmark:
    """``image-folder``: :func:`image_folder_benchmark` on ``opts.data_root`` with its defaults
    (32x32 RGB, stretch, ``test_fraction=0.2``, statistics from each task's training split, no
    augmentation). ``task_order`` / ``n_tasks`` select among the task folders (sorted by name).

    Raises:
        DataError: ``class_order`` given (classes belong to task folders), or any error of
            :func:`image_folder_benchmark`.
    """
    _no_class_order(opts, "image-folder")
    kw = _image_folder_kwargs((32, 32), 3, "stretch", 0.2, None, None)
    tasks, per_task = _image_folder_tasks(opts.data_root, opts, None, augment=False, **kw)
    extra = {"image_size": list(kw["size"]), "channels": 3, "resize": "stretch", "test_fraction": 0.2,
             "augment": False}
    return _benchmark("image-folder", tasks, per_task, (3, *kw["size"]), opts, extra, False)


@register_benchmark("npz", "your arrays: --data-root holds one .npz per task (x_train, y_train, x_test, y_test; "
                           "images or vectors)")
def build_npz(opts: BuildOptions) -> Benchmark:
    """``npz``: :func:`npz_benchmark` on the ``*.npz`` files of ``opts.data_root`` (sorted by name)
    with its defaults (common size / channels inferred, stretch, statistics from each task's
    training split). ``task_order`` / ``n_tasks`` select among the files.

    Raises:
        DataError: ``class_order`` given, or any error of :func:`npz_benchmark`.
    """
    _no_class_order(opts, "npz")
    files = _npz_files(opts.data_root)
    tasks, per_task, shape, extra = _array_benchmark([_read_npz(f) for f in files], opts, "npz", None, None,
                                                     "stretch", "auto", None, None, False)
    return _benchmark("npz", tasks, per_task, shape, opts, {"files": [str(f) for f in files], **extra}, False)
