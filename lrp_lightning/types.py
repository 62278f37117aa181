"""Groups of ``torch.nn`` module classes usable with :func:`isinstance`.

Each group is a class whose :func:`isinstance`/:func:`issubclass` checks test against a tuple of
``torch.nn`` classes, so ``isinstance(module, Convolution)`` is true for every convolution. Some
groups also recognise modules of other libraries by a predicate on the instance (class name,
defining module, attributes), so that nothing of those libraries is imported here.
"""
import torch

from lrp_lightning.layer import MatMul, Mul


class SubclassMeta(type):
    """Metaclass making ``isinstance``/``issubclass`` test against ``cls.__subclass__``.

    ``isinstance`` is also true when the group's ``_matches(instance)`` is (default: never).
    """

    __subclass__: tuple = ()

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls.__subclass__) or cls._matches(instance)

    def _matches(cls, instance: object) -> bool:
        return False

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls.__subclass__)


class Convolution(metaclass=SubclassMeta):
    """Convolutions: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``."""

    __subclass__ = (
        torch.nn.Conv1d,
        torch.nn.Conv2d,
        torch.nn.Conv3d,
        torch.nn.ConvTranspose1d,
        torch.nn.ConvTranspose2d,
        torch.nn.ConvTranspose3d,
    )


class Linear(metaclass=SubclassMeta):
    """Linear maps with a weight and an optional bias: ``nn.Linear`` and all convolutions."""

    __subclass__ = (torch.nn.Linear,) + Convolution.__subclass__


class AvgPool(metaclass=SubclassMeta):
    """Average pooling layers, fixed-size and adaptive."""

    __subclass__ = (
        torch.nn.AvgPool1d,
        torch.nn.AvgPool2d,
        torch.nn.AvgPool3d,
        torch.nn.AdaptiveAvgPool1d,
        torch.nn.AdaptiveAvgPool2d,
        torch.nn.AdaptiveAvgPool3d,
    )


class MaxPool(metaclass=SubclassMeta):
    """Max pooling layers, fixed-size and adaptive."""

    __subclass__ = (
        torch.nn.MaxPool1d,
        torch.nn.MaxPool2d,
        torch.nn.MaxPool3d,
        torch.nn.AdaptiveMaxPool1d,
        torch.nn.AdaptiveMaxPool2d,
        torch.nn.AdaptiveMaxPool3d,
    )


class Activation(metaclass=SubclassMeta):
    """Element-wise activation functions."""

    __subclass__ = (
        torch.nn.ReLU,
        torch.nn.ReLU6,
        torch.nn.LeakyReLU,
        torch.nn.PReLU,
        torch.nn.RReLU,
        torch.nn.ELU,
        torch.nn.SELU,
        torch.nn.CELU,
        torch.nn.GELU,
        torch.nn.SiLU,
        torch.nn.Mish,
        torch.nn.Sigmoid,
        torch.nn.LogSigmoid,
        torch.nn.Tanh,
        torch.nn.Tanhshrink,
        torch.nn.Softplus,
        torch.nn.Softsign,
        torch.nn.Softshrink,
        torch.nn.Hardshrink,
        torch.nn.Hardtanh,
        torch.nn.Hardsigmoid,
        torch.nn.Hardswish,
        torch.nn.Threshold,
    )


class BatchNorm(metaclass=SubclassMeta):
    """Batch normalisation layers."""

    __subclass__ = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def _defined_in(instance: object, *prefixes: str) -> bool:
    """Whether the class of ``instance`` is defined in a module whose path starts with one of ``prefixes``."""
    return type(instance).__module__.startswith(prefixes)


class ElementwiseActivation(metaclass=SubclassMeta):
    """Element-wise non-linearities: the :class:`Activation` group plus the activation modules of
    Hugging Face transformers (``transformers.activations``) and timm (``timm.layers.activations``),
    recognised by the module that defines their class."""

    __subclass__ = Activation.__subclass__

    @staticmethod
    def _matches(instance: object) -> bool:
        return isinstance(instance, torch.nn.Module) and _defined_in(
            instance, "transformers.activations", "timm.layers.activations"
        )


class LayerNorm(metaclass=SubclassMeta):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions (``nn.LayerNorm``)."""

    __subclass__ = (torch.nn.LayerNorm,)


class RMSNorm(metaclass=SubclassMeta):
    """Root-mean-square normalisation over the last dimension(s).

    ``torch.nn.RMSNorm``, and any module whose class name ends with ``RMSNorm`` and that has a
    ``weight`` and an ``eps`` or ``variance_epsilon`` attribute (the Llama, Qwen2 and Mistral
    implementations of Hugging Face transformers): ``y = x / sqrt(mean(x^2) + eps) * weight``.
    """

    __subclass__ = (torch.nn.RMSNorm,)

    @staticmethod
    def _matches(instance: object) -> bool:
        return (
            isinstance(instance, torch.nn.Module)
            and type(instance).__name__.endswith("RMSNorm")
            and hasattr(instance, "weight")
            and (hasattr(instance, "variance_epsilon") or hasattr(instance, "eps"))
        )


class Affine(metaclass=SubclassMeta):
    """Layers affine in their input: the :class:`Linear` group, BatchNorm (in eval mode) and Hugging
    Face's ``Conv1D`` (GPT-2's projections: weight ``(in, out)``, ``y = x W + b``)."""

    __subclass__ = Linear.__subclass__ + BatchNorm.__subclass__

    @staticmethod
    def _matches(instance: object) -> bool:
        return type(instance).__name__ == "Conv1D" and _defined_in(instance, "transformers")


class Product(metaclass=SubclassMeta):
    """Products of two tensors made explicit as modules: :class:`~lrp_lightning.layer.MatMul` and
    :class:`~lrp_lightning.layer.Mul`."""

    __subclass__ = (MatMul, Mul)
