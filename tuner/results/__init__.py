"""The results layer: export (formats, model card), predict, reports (tables, figures), dashboard.

Only the command line sits above it. ``load_model`` is the one name the Python API offers.
"""

from typing import Any

__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str) -> Any:
    # Lazy: `tuner status` and `tuner report` use the tables without paying for torch.
    if name in __all__:
        from tuner.results import export

        return getattr(export, name)
    raise AttributeError(f"module 'tuner.results' has no attribute {name!r}")
