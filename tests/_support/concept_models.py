"""Small models for the concept tests: a residual CNN with BatchNorm whose sums are explicit modules."""
import torch

from lrp_lightning.layer import Sum


def residual_sum_class(*bases: type) -> type:
    """A Sum module that is also each class of ``bases`` (e.g. zennit's Sum, so both composites map it)."""
    return type("ResidualSum", (Sum, *bases), {})


class ResidualBlock(torch.nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (a 1x1 convolution when ``project``), summed by a Sum module, then ReLU."""

    def __init__(self, channels: int, sum_class: type, project: bool = False) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        self.shortcut = torch.nn.Conv2d(channels, channels, 1) if project else torch.nn.Identity()
        self.sum = sum_class()
        self.relu2 = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(self.sum(torch.stack([self.shortcut(x), branch], dim=-1)))


class ResidualCNN(torch.nn.Module):
    """Stem conv-BN-ReLU, two residual blocks (the second with a projected shortcut), pooling and a linear head
    (input 3x8x8, 4 classes)."""

    def __init__(self, sum_class: type = Sum) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.stem_bn = torch.nn.BatchNorm2d(6)
        self.stem_relu = torch.nn.ReLU()
        self.block1 = ResidualBlock(6, sum_class)
        self.block2 = ResidualBlock(6, sum_class, project=True)
        self.pool = torch.nn.AvgPool2d(2)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(6 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        return self.fc(self.flatten(self.pool(self.block2(self.block1(x)))))

    @staticmethod
    def merge_pairs() -> list:
        """(linear layers, BatchNorm) name pairs for ``NamedMergeBatchNorm``."""
        return [(["stem"], "stem_bn")] + [
            ([f"{block}.conv{index}"], f"{block}.bn{index}") for block in ("block1", "block2") for index in (1, 2)
        ]
