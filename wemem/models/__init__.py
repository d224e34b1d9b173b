"""Model architectures of SPEC section 3, by registry name, and which of their weights are prunable.

Importing this package registers every built-in model.
"""

from . import cnn as _cnn  # noqa: F401  (registers resnet18, vgg16bn, densenet121)
from . import mlp as _mlp  # noqa: F401  (registers columnfc)
from . import small as _small  # noqa: F401  (registers smallcnn)
from .registry import (
    MODELS,
    TORCHVISION,
    ModelFactory,
    build_model,
    check_model_fits,
    check_model_name,
    fit_checkpoint,
    initialize,
    is_plugin_model,
    prunable_parameters,
    read_checkpoint,
)

__all__ = [
    "MODELS",
    "TORCHVISION",
    "ModelFactory",
    "build_model",
    "check_model_fits",
    "check_model_name",
    "fit_checkpoint",
    "initialize",
    "is_plugin_model",
    "prunable_parameters",
    "read_checkpoint",
]
