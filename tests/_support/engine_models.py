"""Small models and helpers shared by the attribution-engine tests (exposed as fixtures by ``tests/conftest.py``)."""
import pytest
import torch


def randomize_batch_norms(model: torch.nn.Module, eps: float = 1e-300) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    ``eps`` defaults to a negligible value for oracle comparisons: zennit 0.5.1 cannot set the
    merged BatchNorm's eps to 0 on torch >= 2.10, so its canonized model is off by a factor
    ``1 / sqrt(1 + eps)`` per BatchNorm; with eps ~ 0 both canonizations are exact.
    """
    generator = torch.Generator().manual_seed(7)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eps = eps
            features = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(features, generator=generator))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(features, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(features, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(features, generator=generator))
    return model


def cnn_with_batch_norm(inplace: bool = True) -> torch.nn.Module:
    """Conv-BN-ReLU network with average and max pooling and a two-layer head (input 3x12x12, 5 classes)."""
    return randomize_batch_norms(
        torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(inplace=inplace),
            torch.nn.Conv2d(8, 8, 3, padding=1),
            torch.nn.ReLU(inplace=inplace),
            torch.nn.AvgPool2d(2),
            torch.nn.Conv2d(8, 4, 3),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 16),
            torch.nn.ReLU(),
            torch.nn.Linear(16, 5),
        )
    ).eval()


def mlp(bias: bool = True) -> torch.nn.Module:
    """Three-layer ReLU MLP (10 features, 4 classes)."""
    return torch.nn.Sequential(
        torch.nn.Linear(10, 16, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 12, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Linear(12, 4, bias=bias),
    ).eval()


def conv1d_net(bias: bool = True) -> torch.nn.Module:
    """Conv1d network for sequences (2 channels, length 20, 3 classes)."""
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 6, 5, padding=2, bias=bias),
        torch.nn.ReLU(),
        torch.nn.AvgPool1d(2),
        torch.nn.Conv1d(6, 4, 3, stride=2, bias=bias),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 3, bias=bias),
    ).eval()


def small_vgg_bn() -> torch.nn.Module:
    """torchvision VGG11-BN (features as in torchvision) with a small classifier, input 3x32x32, 5 classes."""
    vgg11_bn = pytest.importorskip("torchvision.models").vgg11_bn

    model = vgg11_bn(num_classes=5)
    model.classifier = torch.nn.Sequential(
        torch.nn.Linear(512 * 7 * 7, 16), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(16, 5)
    )
    return randomize_batch_norms(model).eval()


def resnet18() -> torch.nn.Module:
    """torchvision ResNet18 (BasicBlock), 5 classes."""
    build = pytest.importorskip("torchvision.models").resnet18

    return randomize_batch_norms(build(num_classes=5)).eval()


def resnet_bottleneck() -> torch.nn.Module:
    """A torchvision ResNet of Bottleneck blocks, one per stage, 5 classes."""
    resnet = pytest.importorskip("torchvision.models.resnet")
    Bottleneck, ResNet = resnet.Bottleneck, resnet.ResNet

    return randomize_batch_norms(ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)).eval()


def attribute(composite, model: torch.nn.Module, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relevance of ``input`` for the one-hot ``target`` under ``composite`` (zennit's or ours)."""
    input = input.clone().requires_grad_(True)
    with composite.context(model) as modified:
        output = modified(input)
        one_hot = torch.nn.functional.one_hot(target, output.shape[1]).to(output)
        relevance, = torch.autograd.grad(output, input, grad_outputs=one_hot)
    return relevance


def model_state(model: torch.nn.Module) -> dict:
    """Everything of a model a context must leave exactly as it was."""
    return {
        "tensors": {k: (v.clone(), v.dtype, v.requires_grad) for k, v in model.state_dict(keep_vars=True).items()},
        "param_ids": [id(p) for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "modules": [(name, type(m), id(m)) for name, m in model.named_modules()],
        "hooks": [
            (
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                len(m._backward_hooks),
                len(getattr(m, "_forward_hooks_with_kwargs", {})),
                len(getattr(m, "_forward_pre_hooks_with_kwargs", {})),
            )
            for m in model.modules()
        ],
        "instance_attrs": [sorted(m.__dict__.keys()) for m in model.modules()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    """Assert two :func:`model_state` snapshots are identical (tensors bitwise)."""
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, (value, dtype, requires_grad) in before["tensors"].items():
        other, other_dtype, other_requires_grad = after["tensors"][key]
        assert dtype == other_dtype and requires_grad == other_requires_grad, key
        assert torch.equal(value, other), key
    for key in ("param_ids", "training", "modules", "hooks", "instance_attrs"):
        assert before[key] == after[key], key
    for grad, other in zip(before["grads"], after["grads"]):
        assert (grad is None and other is None) or torch.equal(grad, other)
