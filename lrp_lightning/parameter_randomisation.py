"""Re-initialising a model's layers for the model-parameter randomisation tests (MPRT, Adebayo et al. 2018).

The layers with parameters, from the output backwards (reverse registration order), are what the tests
randomise. Re-initialisation calls each layer's ``reset_parameters`` (its own initialisation scheme)
with torch's RNG seeded inside :func:`~lrp_lightning.model_state.preserved_random_state`, so the result
is reproducible and the global RNG is left as it was; a layer without ``reset_parameters`` gets
standard-normal parameters scaled by each tensor's own standard deviation. Shared by
``SanityCheckCallback`` and the randomisation metrics.
"""
import torch
from torch import nn

from lrp_lightning.model_state import preserved_random_state


def parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly, output first (reverse registration order).

    Parameters
    ----------
    model : torch.nn.Module
        The model.

    Returns
    -------
    list of (str, torch.nn.Module)
    """
    owners = [(name, module) for name, module in model.named_modules() if any(
        parameter is not None for parameter in module._parameters.values()
    )]
    return owners[::-1]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s own parameters (see the module docstring); global RNG untouched.

    Parameters
    ----------
    module : torch.nn.Module
        Modified in place.
    seed : int
        Seed of this re-initialisation.
    """
    with preserved_random_state(), torch.no_grad():
        torch.manual_seed(seed)
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            return
        generator = torch.Generator().manual_seed(seed)
        for parameter in module._parameters.values():
            if parameter is not None:
                scale = parameter.std() if parameter.numel() > 1 else parameter.abs()
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_(noise.to(parameter.device) * scale)
