"""The architecture zoo, built only from fastcnn.nn (DESIGN.md).

Every module of this package is imported here, so each architecture family lives in
its own file and registers its builders with ``@register_model``."""
import importlib
import pkgutil

from fastcnn.models._registry import create, list_models, register_model  # noqa: F401
from fastcnn.models._summary import Summary, summary  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["create", "list_models", "register_model"]
