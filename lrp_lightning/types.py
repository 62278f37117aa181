"""Groups of ``torch.nn`` module classes usable with :func:`isinstance`.

Each group is a class whose :func:`isinstance`/:func:`issubclass` checks test against a tuple of
``torch.nn`` classes, so ``isinstance(module, Convolution)`` is true for every convolution.
"""
import torch


class SubclassMeta(type):
    """Metaclass making ``isinstance``/``issubclass`` test against ``cls.__subclass__``."""

    __subclass__: tuple = ()

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls.__subclass__)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls.__subclass__)


class ConvolutionStandard(metaclass=SubclassMeta):
    """Standard (not transposed) convolutions: ``Conv1d/2d/3d``."""

    __subclass__ = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


class ConvolutionTranspose(metaclass=SubclassMeta):
    """Transposed convolutions: ``ConvTranspose1d/2d/3d``."""

    __subclass__ = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


class Convolution(metaclass=SubclassMeta):
    """Convolutions: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``."""

    __subclass__ = ConvolutionStandard.__subclass__ + ConvolutionTranspose.__subclass__


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
