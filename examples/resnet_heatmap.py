"""Plain PyTorch: explain a torchvision ResNet18 with an LRP composite and save the heatmap as PNG.

No Lightning involved. The ResNet has random weights (nothing is downloaded), so the heatmap shows
the mechanics, not a trained model's reasoning. Run::

    python examples/resnet_heatmap.py --output resnet_heatmap.png
"""
import argparse

import torch
from torchvision.models import resnet18

from lrp_lightning import image
from lrp_lightning.attribution import Gradient
from lrp_lightning.composites import get_composite
from lrp_lightning.torchvision import ResNetCanonizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--composite", default="epsilon_plus_flat", help="a registered composite name")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--output", default="resnet_heatmap.png", help="where to save the PNG")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    # an ImageNet-normalised random "image"; replace it with a real preprocessed photo
    x = torch.randn(1, 3, args.size, args.size)

    # ResNetCanonizer folds BatchNorm into the convolutions and turns the residual additions into
    # Sum modules, so that every part of the network gets an LRP rule
    composite_class = get_composite(args.composite)
    if args.composite == "epsilon_gamma_box":
        # the box rule of the first layer needs the lowest and highest possible input values
        composite = composite_class(low=x.min().expand_as(x), high=x.max().expand_as(x), canonizers=[ResNetCanonizer()])
    else:
        composite = composite_class(canonizers=[ResNetCanonizer()])

    with torch.no_grad():
        target = model(x).argmax(dim=1)  # explain the predicted class
    # Gradient + composite = LRP; hooks and canonizers are removed when the with-block ends
    with Gradient(model, composite) as attributor:
        output, relevance = attributor(x, target)
    logit = output[0, target[0]]
    print(f"class {int(target[0])}: logit {logit:.3f}, relevance sum {relevance.sum():.3f}")

    # input | heatmap | overlay, one row per sample, as uint8 (3, H, W)
    picture = image.attribution_grid(x, relevance, cmap="coldnhot")
    print("saved", image.save_png(picture, args.output))


if __name__ == "__main__":
    main()
