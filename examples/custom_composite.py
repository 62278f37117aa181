"""A custom composite: choose the LRP rule of each layer by its name (a name map).

Built-in composites pick rules by layer type. A ``NameMapComposite`` lets you pick them by module
name instead; ``register_composite`` makes it available by name everywhere, including in
``AttributionCallback("my_composite")``. Run::

    python examples/custom_composite.py
"""
import torch
from torch import nn

from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import COMPOSITES, NameMapComposite, register_composite
from lrp_lightning.rules import Epsilon, Flat, Gamma, Pass

# a model with named layers; print(dict(model.named_modules())) lists the names
model = nn.Sequential()
model.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
model.add_module("relu1", nn.ReLU())
model.add_module("conv2", nn.Conv2d(8, 8, 3, padding=1))
model.add_module("relu2", nn.ReLU())
model.add_module("flatten", nn.Flatten())
model.add_module("head", nn.Linear(8 * 16 * 16, 4))


@register_composite("my_composite")
class MyComposite(NameMapComposite):
    """Flat in the first convolution, Gamma in the second, Epsilon in the head, ReLUs pass."""

    def __init__(self, canonizers=None):
        super().__init__(
            name_map=[
                (["conv1"], Flat()),
                (["conv2"], Gamma(gamma=0.25)),
                (["head"], Epsilon(epsilon=1e-6)),
                (["relu1", "relu2"], Pass()),
            ],
            canonizers=canonizers,
        )


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    composite = COMPOSITES["my_composite"]()  # or MyComposite()
    with Gradient(model, composite) as attributor:
        print("rules while registered:")
        for name, rule in composite.rule_map.items():
            print(f"  {name:8s} {rule!r}")
        output, relevance = attributor(x, torch.tensor([0, 3]))
    print("relevance", tuple(relevance.shape), "per-sample sums", relevance.sum(dim=(1, 2, 3)).tolist())


if __name__ == "__main__":
    main()
