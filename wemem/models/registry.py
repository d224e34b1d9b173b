"""The model registry of SPEC section 3: building a model by name, and which of its weights are prunable.

The architectures register themselves from their own modules (:mod:`wemem.models.mlp`, :mod:`wemem.models.cnn`).
Besides a registered name (built in, or an installed package's ``wemem.models`` entry point), a model is
``torchvision:NAME`` (any torchvision classification model, randomly initialized, nothing downloaded) or a
plug-in ``package.module:factory`` called as ``factory(input_shape, num_classes)``. Built-in models get the
SPEC's initialization; plug-ins and torchvision models keep their own.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .. import plugins
from ..errors import WememError, require
from ..registry import Registry

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model", group="wemem.models")
TORCHVISION = "torchvision:"
FACTORY_CALL = "factory(input_shape, num_classes)"


def is_plugin_model(name: str) -> bool:
    """A factory plug-in ``package.module:factory`` (not a registered name or ``torchvision:NAME``)."""
    return name not in MODELS and not name.startswith(TORCHVISION) and plugins.is_reference(name)


def check_model_name(name: str) -> str:
    """``name`` when it can name a model at all (registered, torchvision:NAME or an import path), else the
    unknown-name error; whether it imports and fits is :func:`check_model_fits`'s question."""
    if name in MODELS or name.startswith(TORCHVISION) or is_plugin_model(name):
        return name
    raise WememError(
        f"unknown model {name!r}; choose one of: {', '.join(MODELS.names())}, torchvision:NAME (any "
        f"torchvision classification model), or your own factory as package.module:factory"
    )


def model_factory(name: str, base_dir: str | None = None) -> tuple[ModelFactory, bool]:
    """The factory a model name gives, and whether it is a built-in (which gets the SPEC's initialization)."""
    if name in MODELS:
        return MODELS.get(name), name not in MODELS.plugin_names
    if name.startswith(TORCHVISION):
        return torchvision_factory(name[len(TORCHVISION) :]), False
    ref = plugins.parse_reference(check_model_name(name), "model")
    factory = plugins.resolve(ref, "model", base_dir)
    plugins.check_signature(factory, name, "model", ((1,), 2), FACTORY_CALL)
    return factory, False


def torchvision_factory(architecture: str) -> ModelFactory:
    """Any torchvision classification model by its builder name, with the dataset's class count; random weights
    (``weights=None``: nothing is ever downloaded). Trained weights come from ``[model] checkpoint``."""
    import torchvision.models

    known = sorted(torchvision.models.list_models(module=torchvision.models))
    if architecture not in known:
        raise WememError(
            f"model 'torchvision:{architecture}' is not a torchvision classification model; choose one "
            f"of: {', '.join(known)}"
        )

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        options: dict = {"weights": None, "num_classes": num_classes}
        if len(input_shape) == 3 and input_shape[1] == input_shape[2]:
            try:  # vision transformers and others take their image size; the rest refuse the keyword
                return torchvision.models.get_model(architecture, image_size=input_shape[1], **options)
            except TypeError:
                pass
        return torchvision.models.get_model(architecture, **options)

    return build


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, base_dir: str | None = None) -> nn.Module:
    factory, built_in = model_factory(name, base_dir)
    try:
        model = factory(tuple(input_shape), num_classes)
    except WememError:
        raise
    except Exception as error:  # the user's factory failed: its own message, and where
        if built_in:
            raise
        raise WememError(
            f"model {name!r} failed when called as {FACTORY_CALL} with {tuple(input_shape)}, "
            f"{num_classes} ({type(error).__name__}: {error}); fix the factory"
        ) from None
    if not isinstance(model, nn.Module):
        raise WememError(
            f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module; the factory must "
            f"return the network"
        )
    if built_in:
        initialize(model)
    return model


def check_model_fits(name: str, input_shape: tuple[int, ...], num_classes: int, base_dir: str | None = None) -> None:
    """One forward pass of 2 zero samples, so a model that cannot take the dataset's samples is refused before
    a study starts rather than failing inside every trial; and a model with nothing to prune is refused."""
    model = build_model(name, input_shape, num_classes, base_dir).eval()  # eval: BatchNorm takes any batch
    advice = "choose a model for this input, e.g. columnfc for tabular data"
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *input_shape))
    except WememError:
        raise
    except Exception as error:  # shape mismatches surface as RuntimeError, ValueError, ... inside any (user) model
        raise WememError(
            f"model {name!r} does not fit dataset samples of shape {list(input_shape)} "
            f"({type(error).__name__}: {error}); {advice}"
        ) from None
    shape = list(getattr(output, "shape", []))
    require(
        shape == [2, num_classes],
        f"model {name!r} gives outputs of shape {shape} for 2 samples of shape {list(input_shape)}, expected "
        f"[2, {num_classes}] (one score per class); {advice}",
    )
    require(
        len(prunable_parameters(model)) > 0,
        f"model {name!r} has no prunable weights (no torch.nn.Conv2d or torch.nn.Linear layer outside its "
        f"'unprunable' list); iterative pruning needs at least one",
    )


CHECKPOINT_FIX = "save the trained model's weights with torch.save(model.state_dict(), PATH)"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``state_dict`` file, loaded with ``weights_only=True``: a checkpoint is received data, and a pickled
    model (``torch.save(model)``) could run any code when unpickled, so it is refused, unread."""
    path = Path(path)
    require(
        path.is_file(),
        f"checkpoint {path} {'is a folder' if path.is_dir() else 'does not exist'}; "
        f"[model] checkpoint names the file of the victim's trained weights ({CHECKPOINT_FIX})",
    )
    try:
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message is long and styled for a terminal: ours says it all
        raise WememError(
            f"checkpoint {path} is not a state_dict of tensors that loads with weights_only=True: it "
            f"pickles Python objects (e.g. a whole model saved with torch.save(model)), which could run "
            f"any code, so it is refused unread; {CHECKPOINT_FIX}"
        ) from None
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise WememError(
            f"checkpoint {path} is not a readable torch file of tensors ({type(error).__name__}: "
            f"{str(error)[:160]}); {CHECKPOINT_FIX}"
        ) from None
    for wrapper in ("state_dict", "model_state_dict"):  # Lightning's and the common training-loop dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    require(
        isinstance(state, dict) and len(state) > 0 and all(isinstance(v, torch.Tensor) for v in state.values()),
        f"checkpoint {path} holds a {type(state).__name__}, not a state_dict of tensors; {CHECKPOINT_FIX}",
    )
    return state


def fit_checkpoint(path: str | Path, model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The checkpoint's weights when they are exactly those of ``model`` (keys and shapes), else which differ."""
    state = read_checkpoint(path)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WememError(
            f"checkpoint {path} does not fit model {name!r}: missing {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
            f"{' ...' if len(unexpected) > 4 else ''}; it must be the state_dict of this very "
            f"architecture built for this dataset's input and classes"
        )
    wrong = [
        f"{k}: {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    require(
        not wrong,
        f"checkpoint {path} does not fit model {name!r}: shapes differ ({'; '.join(wrong[:3])}); "
        f"build the model for this dataset's input shape and class count",
    )
    broken = non_finite_tensors(state)
    require(
        not broken,
        f"checkpoint {path} holds NaN or infinite values in {', '.join(broken[:4])}"
        f"{' ...' if len(broken) > 4 else ''}: a model whose training diverged, whose outputs and "
        f"attack scores mean nothing; save the weights of a model that trained to finite values "
        f"(an earlier epoch, a lower learning rate)",
    )
    return {k: state[k].to(v.dtype) for k, v in expected.items()}


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """The floating-point tensors holding NaN or an infinity, each with how many of its values do."""
    counts = {key: int((~torch.isfinite(tensor)).sum()) for key, tensor in state.items() if tensor.is_floating_point()}
    return [f"{key} ({count} of {state[key].numel()} values)" for key, count in counts.items() if count]


def initialize(model: nn.Module) -> None:
    """Xavier-normal conv/linear weights, zero biases, BN weight 1 / bias 0 (SPEC section 3)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def prunable_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights pruned by magnitude: every conv and linear weight, except the models' declared exceptions.

    A model may define ``unprunable`` (names of modules kept dense), e.g. columnfc keeps its output layer.
    """
    keep_dense = set(getattr(model, "unprunable", ()))
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in keep_dense
    }
