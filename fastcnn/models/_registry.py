"""The model registry: ``@register_model`` builders, ``create`` and ``list_models``."""
from typing import Callable

_MODELS: dict[str, Callable] = {}


def register_model(fn: Callable = None, *, name: str = None):
    """Register a builder ``fn(num_classes=1000, **config) -> nn.Module`` under its
    function name (or ``name``)."""
    def wrap(f):
        key = name or f.__name__
        if key in _MODELS:
            raise ValueError(f"fastcnn.models: model {key!r} is registered twice")
        _MODELS[key] = f
        return f
    return wrap(fn) if fn is not None else wrap


def create(name: str, num_classes: int = 1000, **config):
    """Build the model registered as ``name``."""
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[0] in m][:8]
        raise ValueError(f"fastcnn.models.create: unknown model {name!r}"
                         + (f"; similar: {close}" if close else "; see fastcnn.models.list_models()"))
    return _MODELS[name](num_classes=num_classes, **config)


def list_models(pattern: str = "*"):
    """Registered model names matching the shell-style ``pattern``, sorted."""
    import fnmatch
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))
