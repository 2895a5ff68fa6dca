"""Data layer: tasks, benchmarks (task sequences), readers of the official files and batched transforms.

Public API::

    from unforget.data import build_benchmark, list_benchmarks, register_benchmark
    bench = build_benchmark("split-cifar100", data_root="data", seed=0)   # Benchmark
    for task in bench.tasks: ...                                          # Task(id, name, classes, ...)
"""
from unforget.data import readers, transforms
from unforget.data import custom  # noqa: F401  (registers the image-folder and npz benchmarks)
from unforget.data import facial, fine_grained  # noqa: F401  (registers facial, fine-grained)
from unforget.data.benchmarks import (
    BuildOptions,
    build_benchmark,
    list_benchmarks,
    make_task,
    register_benchmark,
)
from unforget.data.custom import image_folder_benchmark, npz_benchmark, tensor_benchmark
from unforget.data.readers import default_data_root
from unforget.data.task import Benchmark, Split, Task
from unforget.data.transforms import ImageTransform, Transform

__all__ = [
    "Split", "Task", "Benchmark",
    "build_benchmark", "register_benchmark", "list_benchmarks", "BuildOptions", "make_task",
    "readers", "transforms", "ImageTransform", "Transform", "default_data_root",
    "custom", "image_folder_benchmark", "npz_benchmark", "tensor_benchmark",
]
