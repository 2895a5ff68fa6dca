"""unforget: task-incremental continual learning with exact unforgetting.

CPG (Hung et al. 2019) and its baselines on one engine of task-aware layers.
``unforget.run(benchmark, method, config)`` learns a task sequence; ``unforget.load(path)``
gives back its :class:`~unforget.learner.Learner`, which serves every learned task
(``learner(x, task=t)``), learns more (``learner.learn(task)``) and exports one
(``learner.export(t)``).

The API is imported on first use (PEP 562), so ``import unforget.cli`` starts without PyTorch
and a Ctrl-C while the command line imports it exits quietly.
"""
__version__ = "0.1.0"

__all__ = ["run", "load", "Learner", "ServingModel", "RunResult", "__version__"]
_API = ("run", "load", "ServingModel", "RunResult")


def __getattr__(name: str):
    if name in _API:
        from unforget import api

        return getattr(api, name)
    if name == "Learner":
        from unforget.learner import Learner

        return Learner
    raise AttributeError(f"module 'unforget' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | {"Learner"})
