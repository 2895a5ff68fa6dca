"""Continual-learning methods. Importing this package registers the built-in ones."""
from unforget.methods.base import Method, get_method, list_methods, register_method
from unforget.methods import clnp, cpg, hat, independent, progressive, regularization, supsup, wsn  # noqa: F401  (registers the built-in methods)

__all__ = ["Method", "get_method", "list_methods", "register_method"]
