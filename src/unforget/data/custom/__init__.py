"""Bring your own tasks: benchmarks built from a user's image folders, ``.npz`` files or tensors.

Three entry points, one per source, all returning a :class:`~unforget.data.task.Benchmark`:

- :func:`image_folder_benchmark` -- one folder per task, one subfolder per class, image files of any
  size and mode (registered as ``image-folder``);
- :func:`npz_benchmark` -- one ``.npz`` file per task with ``x_train, y_train, x_test, y_test``
  (registered as ``npz``);
- :func:`tensor_benchmark` -- in-memory arrays / tensors through the Python API.

Through the registry the data root is the folder that holds the task folders (or the ``.npz``
files)::

    build_benchmark("image-folder", data_root="my_tasks", seed=0)   # my_tasks/<task>/<class>/*.png
    unforget run --benchmark npz --data-root my_arrays --method cpg  # my_arrays/*.npz

Rules shared by all three (the same as the built-in benchmarks, see
:mod:`unforget.data.benchmarks`):

- every task of a sequence gets the same input shape: images are converted to a common channel
  count (``1`` = grey, ``3`` = RGB) and resized to a common ``image_size`` (``"stretch"``, or
  ``"center-crop"``: scale so the image covers the target, keeping the aspect ratio, then cut the
  centre); vectors ``(N, D)`` must share ``D``;
- images are stored as ``uint8`` ``(N, C, H, W)`` (float sources in ``[0, 1]`` stay ``float32``);
- labels are remapped to ``0..C-1`` per task; every task needs at least 2 classes;
- validation is held out of the training data per class with
  :func:`~unforget.data.benchmarks.train_val_indices` (seeded by ``seed`` and the task name), after
  ``max_train_per_class``; the test split is never used for it;
- the task's transform normalises with ``mean`` / ``std`` when given, else with statistics computed
  from that task's own training split (per channel for images, per feature for vectors), so no
  task looks at another task's data.
"""
from __future__ import annotations

from unforget.data.custom.arrays import LAYOUTS, NPZ_KEYS, ArrayLike, npz_benchmark, tensor_benchmark
from unforget.data.custom.folders import TEST_SPLIT_SEED, image_folder_benchmark
from unforget.data.custom.images import IMAGE_EXTENSIONS, RESIZE_MODES, _load_image, convert_channels, resize_images
from unforget.data.custom.options import ImageSize
from unforget.data.custom.registry import build_image_folder, build_npz  # registers image-folder and npz
from unforget.data.custom.statistics import VectorTransform

__all__ = [
    "ArrayLike", "IMAGE_EXTENSIONS", "ImageSize", "LAYOUTS", "NPZ_KEYS", "RESIZE_MODES", "TEST_SPLIT_SEED",
    "VectorTransform", "build_image_folder", "build_npz", "convert_channels", "image_folder_benchmark",
    "npz_benchmark", "resize_images", "tensor_benchmark",
]
