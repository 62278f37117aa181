"""A zennit 0.5.1 user switches by changing the import: zennit's documented usage runs with ``zennit`` aliased to
``lrp_lightning`` (in a subprocess, ``sys.modules`` mapped before any import), and the composites it computes
there equal the real zennit's in float64."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

zennit_composites = pytest.importorskip("zennit.composites")
zennit_attribution = pytest.importorskip("zennit.attribution")

REPO = Path(__file__).resolve().parents[2]

ALIAS = """
import importlib, sys
import lrp_lightning
sys.modules["zennit"] = lrp_lightning
for name in ("attribution", "canonizers", "cmap", "composites", "core", "image", "layer", "rules", "torchvision",
             "types"):
    sys.modules["zennit." + name] = importlib.import_module("lrp_lightning." + name)
"""

# The code paths of zennit 0.5.1's how-to guides (Using Attributors, Writing Custom Rules / Composites / Canonizers,
# Visualizing Results), written against the zennit API with small models so the run stays short.
USAGE = r'''
import os
import sys
import warnings
from functools import partial
from itertools import islice

import numpy as np
import torch
from PIL import Image
from torch.nn import Conv2d, Flatten, Linear, ReLU, Sequential

import zennit
import zennit.core
assert zennit.core.__name__ == "lrp_lightning.core", "zennit is not aliased"

from zennit.attribution import Gradient, IntegratedGradients, Occlusion, SmoothGrad, constant, identity
from zennit.attribution import occlude_independent
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.cmap import ColorMap, LazyColorMapCache
from zennit.composites import COMPOSITES, EpsilonGammaBox, EpsilonPlusFlat, NameMapComposite, MixedComposite
from zennit.core import BasicHook, Composite, Hook, ParamMod, RemovableHandleList, Stabilizer, stabilize
from zennit.image import CMAPS, get_cmap, gridify, imgify, imsave, interval_norm_bounds, palette
from zennit.rules import AlphaBeta, Epsilon, Gamma, Norm, Pass, ZBox, ZPlus, zero_bias, ClampMod, GammaMod, NoMod
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer, ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, AvgPool, Convolution, ConvolutionStandard, ConvolutionTranspose, Linear as AnyLinear

out_dir = sys.argv[1]
warnings.simplefilter("ignore")
torch.manual_seed(0)

def small_cnn():
    return Sequential(Conv2d(3, 4, 3, padding=1), ReLU(), Conv2d(4, 6, 3, padding=1), ReLU(), Flatten(),
                      Linear(6 * 8 * 8, 32), ReLU(), Linear(32, 10))

# --- Using Attributors ---
model = small_cnn()
input = torch.randn(2, 3, 8, 8, requires_grad=True)
with Gradient(model) as attributor:
    output, relevance = attributor(input)
expected, = torch.autograd.grad(model(input), input, model(input).detach())
assert torch.allclose(relevance, expected) and output.shape == (2, 10)
with Gradient(model, EpsilonPlusFlat()) as attributor:
    output, relevance = attributor(input, torch.eye(10)[[0, 0]])
assert relevance.shape == input.shape

def one_hot_max(output):
    values, indices = output.max(1)
    return values[:, None] * torch.eye(output.shape[1])[indices]

with Gradient(model) as attributor:
    _, relevance = attributor(input, one_hot_max)
with Gradient(model, attr_output=torch.ones_like) as attributor:
    _, relevance = attributor(input)
expected, = torch.autograd.grad(model(input).sum(), input)
assert torch.allclose(relevance, expected)
with SmoothGrad(model, EpsilonPlusFlat(), noise_level=0.1, n_iter=4) as attributor:
    _, relevance = attributor(input, torch.eye(10)[[0, 0]])
with IntegratedGradients(model, baseline_fn=torch.zeros_like, n_iter=4) as attributor:
    _, relevance = attributor(input, torch.eye(10)[[3, 3]])
noisy = partial(occlude_independent, fill_fn=lambda x: x * torch.randn_like(x) * 0.2, invert=False)
with Occlusion(model, window=4, stride=2, occlusion_fn=noisy) as attributor:
    _, relevance = attributor(input.detach(), lambda out: torch.eye(10)[[0]] * out)
assert relevance.shape == input.shape
assert identity(3) == 3 and constant(4)() == 4

# --- Using Rules, Composites, and Canonizers ---
from collections import OrderedDict
from zennit.canonizers import NamedMergeBatchNorm
from zennit.composites import LayerMapComposite, NameLayerMapComposite, SpecialFirstLayerMapComposite
from zennit.rules import Flat
from zennit.types import BatchNorm

conv = Conv2d(3, 5, 3, padding=1)
handles = Epsilon(epsilon=1e-5).register(conv)
image_input = torch.randn(1, 3, 8, 8, requires_grad=True)
out = conv(image_input)
attribution, = torch.autograd.grad(out, image_input, grad_outputs=torch.ones_like(out))
handles.remove()
assert not conv._forward_hooks
dense, flat_input = Linear(12, 6), torch.randn(1, 12, requires_grad=True)
for rule in (ZPlus(zero_params="bias"), ZPlus(stabilizer=1e-3), Epsilon(epsilon=1e-3),
             ZPlus(stabilizer=Stabilizer(epsilon=1e-4, clip=True)),
             Epsilon(epsilon=Stabilizer(epsilon=1e-4, norm_scale=True)), ZPlus(stabilizer=lambda x: x + 1e-4),
             Epsilon(epsilon=lambda x: ((x == 0.0) + x.sign()) * x.abs().clip(min=1e-3))):
    handles = rule.register(dense)
    out = dense(flat_input)
    attribution, = torch.autograd.grad(out, flat_input, grad_outputs=torch.ones_like(out))
    handles.remove()
    assert torch.isfinite(attribution).all()

scaled_input = torch.randn(1, 3, 8, 8, requires_grad=True) * 1.0
composite = EpsilonGammaBox(low=-3.0, high=3.0, epsilon=1e-4, gamma=2.0,
                            stabilizer=Stabilizer(epsilon=1e-5, clip=True), zero_params="bias")
composite.register(model)
out = model(scaled_input)
registered, = torch.autograd.grad(out, scaled_input, grad_outputs=torch.ones_like(out))
composite.remove()
with composite.context(model) as modified_model:
    out = modified_model(scaled_input)
    in_context, = torch.autograd.grad(out, scaled_input, grad_outputs=torch.ones_like(out))
assert torch.equal(registered, in_context)

layer_map = [(Activation, Pass()), (AvgPool, Norm()), (Convolution, ZPlus()), (Linear, Epsilon(epsilon=1e-6))]
composite_epsilon_plus = LayerMapComposite(layer_map=layer_map)
low, high = torch.full((1, 3, 8, 8), -3), torch.full((1, 3, 8, 8), 3)
composite_special_first_layer = SpecialFirstLayerMapComposite(layer_map=layer_map,
                                                              first_map=[(AnyLinear, ZBox(low, high))])
named_model = Sequential(OrderedDict([
    ("conv0", Conv2d(3, 4, 3, padding=1)), ("relu0", ReLU()), ("conv1", Conv2d(4, 6, 3, padding=1)),
    ("relu1", ReLU()), ("flatten", Flatten()), ("linear0", Linear(6 * 8 * 8, 16)), ("relu2", ReLU()),
    ("linear1", Linear(16, 10)),
]))
name_map = [(["conv0"], ZBox(low, high)), (["conv1"], ZPlus()), (["linear0", "linear1"], Epsilon())]
for composite in (composite_epsilon_plus, composite_special_first_layer, NameMapComposite(name_map=name_map),
                  NameLayerMapComposite(name_map=name_map, layer_map=layer_map),
                  MixedComposite(composites=[NameMapComposite(name_map=name_map), composite_special_first_layer]),
                  EpsilonGammaBox(low=-3.0, high=3.0, layer_map=[(BatchNorm, Pass()), (Linear, ZPlus())],
                                  first_map=[(Convolution, Flat())])):
    with composite.context(named_model) as modified_model:
        out = modified_model(scaled_input)
        attribution, = torch.autograd.grad(out, scaled_input, torch.eye(10)[[0]])
    assert torch.isfinite(attribution).all()

bn_model = Sequential(Conv2d(3, 4, 3, padding=1), ReLU(), Conv2d(4, 6, 3, padding=1), torch.nn.BatchNorm2d(6), ReLU(),
                      Flatten(), Linear(6 * 8 * 8, 16), ReLU(), Linear(16, 10)).eval()
before = {key: value.clone() for key, value in bn_model.state_dict().items()}
instances = SequentialMergeBatchNorm().apply(bn_model)
bn_model(torch.randn(1, 3, 8, 8))
for instance in instances:
    instance.remove()
with EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]).context(bn_model) as modified_model:
    out = modified_model(image_input)
    attribution, = torch.autograd.grad(out, image_input, torch.eye(10)[[0]])
with EpsilonPlusFlat(canonizers=[NamedMergeBatchNorm([(["2"], "3")])]).context(bn_model) as modified_model:
    out = modified_model(image_input)
    assert torch.equal(attribution, torch.autograd.grad(out, image_input, torch.eye(10)[[0]])[0])
assert all(torch.equal(before[key], value) for key, value in bn_model.state_dict().items())

# --- Writing Custom Rules ---
class Ignore(Hook):
    def backward(self, module, grad_input, grad_output):
        return grad_output

class GradTimesInput(Hook):
    def forward(self, module, input, output):
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        return (self.stored_tensors["input"][0] * grad_input[0],)

class ScaledNegative(Hook):
    def __init__(self, scale=0.2):
        super().__init__()
        self.scale = scale

    def forward(self, module, input, output):
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        stored = self.stored_tensors["input"][0]
        return (grad_input[0] * (stored.clip(min=0.0) + stored.clip(max=0.0) * self.scale),)

    def copy(self):
        return self.__class__(scale=self.scale)

assert ScaledNegative(scale=0.23).copy().scale == 0.23

def run_hook(hook, module, input):
    handles = hook.register(module)
    assert isinstance(handles, RemovableHandleList)
    try:
        output = module(input)
        return torch.autograd.grad(output, input, torch.ones_like(output))[0]
    finally:
        handles.remove()

x = torch.randn(3, 4, requires_grad=True)
linear = torch.nn.Linear(4, 4)
assert torch.equal(run_hook(Ignore(), torch.nn.ReLU(), x), torch.ones_like(x))
plain = torch.ones(3, 4) @ linear.weight.detach()
assert torch.allclose(run_hook(GradTimesInput(), linear, x), x.detach() * plain)
scaled = x.detach().clip(min=0) + 0.23 * x.detach().clip(max=0)
assert torch.allclose(run_hook(ScaledNegative(0.23), linear, x), plain * scaled)

lrp_zero = BasicHook(
    input_modifiers=[lambda input: input],
    param_modifiers=[lambda param, _: param],
    output_modifiers=[lambda output: output],
    gradient_mapper=(lambda out_grad, outputs: [out_grad / outputs[0]]),
    reducer=(lambda inputs, gradients: inputs[0] * gradients[0]),
)
z = linear(x).detach()
assert torch.allclose(run_hook(lrp_zero, linear, x), x.detach() * ((1 / z) @ linear.weight.detach()))
run_hook(BasicHook(), linear, x)

class ZPlusReLU(BasicHook):
    def __init__(self, names=None):
        self.names = [] if names is None else names
        super().__init__(param_modifiers=[self._param_modifier])

    def _param_modifier(self, param, name):
        return param.clip(min=0.0) if name in self.names else torch.zeros_like(param)

positive = torch.rand(3, 4, requires_grad=True)
w_plus = linear.weight.detach().clip(min=0)
z_plus = positive.detach() @ w_plus.t()
expected = positive.detach() * ((1 / stabilize(z_plus)) @ w_plus)
assert torch.allclose(run_hook(ZPlusReLU(["weight"]), linear, positive), expected)
zplus_hook = BasicHook(param_modifiers=[ParamMod(lambda x, _: x.clip(min=0.0), zero_params="bias")])
assert torch.allclose(run_hook(zplus_hook, linear, positive), expected)
with ParamMod(lambda p, _: p * 0, zero_params=zero_bias())(linear) as modified:
    assert modified.weight.abs().sum() == 0

# --- Writing Custom Composites ---
def module_map(ctx, name, module):
    if list(islice(module.children(), 1)) or not isinstance(module, AnyLinear):
        return None
    ctx["leafnum"] = ctx.get("leafnum", -1) + 1
    return AlphaBeta(alpha=2, beta=1) if ctx["leafnum"] < 2 else Epsilon(epsilon=1e-3)

with Gradient(model, Composite(module_map=module_map)) as attributor:
    _, relevance = attributor(input, torch.eye(10)[[1, 1]])

class LeafNumberTypeComposite(Composite):
    def __init__(self, leafnum_map):
        super().__init__(module_map=self.mapping)
        self.leafnum_map = leafnum_map

    def mapping(self, ctx, name, module):
        if list(islice(module.children(), 1)):
            return None
        ctx["leafnum"] = ctx.get("leafnum", -1) + 1
        for (low, high), dtype, template in self.leafnum_map:
            if isinstance(module, dtype) and low <= ctx["leafnum"] < high:
                return template
        return None

inf = float("inf")
composite = LeafNumberTypeComposite([
    [(0, 1), Convolution, ZBox(low=-3.0, high=3.0)],
    [(1, 4), AnyLinear, Gamma(gamma=0.25)],
    [(4, inf), AnyLinear, Epsilon(epsilon=0.5)],
    [(0, inf), Activation, Pass()],
    [(0, inf), (AvgPool, torch.nn.MaxPool2d), Norm()],
])
with Gradient(model, composite) as attributor:
    _, relevance = attributor(input, torch.eye(10)[[1, 1]])
assert torch.isfinite(relevance).all()

# --- Writing Custom Canonizers (and a second-order gradient through a canonized model) ---
class SoftplusCanonizer(Canonizer):
    def __init__(self, beta=10.0):
        self.beta = beta
        self.module = None
        self.relu_children = None

    def apply(self, root_module):
        instances = []
        for module in root_module.modules():
            children = [(name, child) for name, child in module.named_children() if isinstance(child, torch.nn.ReLU)]
            if children:
                instance = self.copy()
                instance.register(module, children)
                instances.append(instance)
        return instances

    def register(self, module, relu_children):
        self.module = module
        self.relu_children = relu_children
        for name, _ in relu_children:
            setattr(module, name, torch.nn.Softplus(beta=self.beta))

    def remove(self):
        for name, child in self.relu_children:
            setattr(self.module, name, child)

    def copy(self):
        return SoftplusCanonizer(beta=self.beta)

composite = Composite(canonizers=[SoftplusCanonizer()])
adversarial = torch.randn(1, 3, 8, 8, requires_grad=True)
with composite.context(model) as modified:
    out = modified(adversarial)
    relevance, = torch.autograd.grad(out, adversarial, torch.eye(10)[[0]], create_graph=True)
    loss = ((relevance - adversarial.detach()) ** 2).mean()
    adv_grad, = torch.autograd.grad(loss, adversarial)
assert all(isinstance(m, ReLU) for m in (model[1], model[3], model[6]))
imgify(adv_grad[0].abs().sum(0), cmap="hot")

# --- Visualizing Results ---
with Gradient(model) as attributor:
    output, relevance = attributor(input)
for n, (inp, rel) in enumerate(zip(input, relevance)):
    imsave(os.path.join(out_dir, f"input_{n:03d}.png"), inp.detach())
    imsave(os.path.join(out_dir, f"relevance_{n:03d}.png"), rel)
imsave(os.path.join(out_dir, "input_grid.png"), input.detach(), grid=True)
imsave(os.path.join(out_dir, "relevance_grid.png"), relevance, grid=(1, 2))
absrel = relevance.abs().sum(1)
imsave(os.path.join(out_dir, "relevance_abs_0.png"), absrel[0], vmin=0, vmax=absrel[0].amax())
assert imgify(absrel[0], vmin=0, vmax=absrel[0].amax()).size == (8, 8)
grid = torch.stack(torch.meshgrid(*((torch.linspace(-1, 1, 32),) * 2), indexing="xy"))
dist = ((grid + 0.25) ** 2).sum(0, keepdims=True) ** 0.5
ripples = (dist * 5 * torch.pi).cos().clip(-0.5, 1.0) * (-dist).exp()
for symmetric in (True, False):
    for cmap in ("bwr", "wred", "coldnhot", "ff0,00f", ColorMap("000,f00,fff")):
        imgify(ripples, symmetric=symmetric, cmap=cmap)
bar = torch.arange(256)[None].repeat((8, 1))
imgify(bar, cmap=ColorMap("000,a0:f00,fff"))
imgify(bar, cmap=get_cmap("1f:fff,f0f,000"))
cmaps = LazyColorMapCache({"reds": "111,f11", "blues": "111,11f", "greens": "111,1f1"})
image = imgify(ripples, cmap=cmaps["greens"])
assert sorted(CMAPS) == sorted(["gray", "wred", "wblue", "hot", "cold", "coldnhot", "bwr", "france", "seismic",
                                "coolio", "coleus"])
image = imgify(ripples, symmetric=True)
# current Pillow reads a palette from bytes, not from the (256, 3) array palette() returns (zennit's fails alike)
image.putpalette(ColorMap("111,1f1").palette(level=1.0).tobytes())
name = os.path.join(out_dir, "newheatmap.png")
imsave(name, ripples, symmetric=True)
swapped = Image.open(name).convert("P")
swapped.putpalette(palette("f1f,111,ff1", level=1.0).tobytes())
swapped.save(name)
assert np.array(Image.open(name).convert("RGB")).shape == (32, 32, 3)

# --- every registered composite on a fixed float64 model, for the comparison with the real zennit ---
# (a tiny BatchNorm eps: zennit's merge of a BatchNorm is off by about eps, ours is exact)
torch.set_default_dtype(torch.float64)
torch.manual_seed(1)
model = Sequential(Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, eps=1e-12), ReLU(), torch.nn.AvgPool2d(2),
                   Conv2d(4, 5, 3, padding=1), torch.nn.Tanh(), Flatten(), Linear(5 * 3 * 3, 6), ReLU(),
                   Linear(6, 4)).eval()
model[1].running_mean.uniform_(-0.5, 0.5)
model[1].running_var.uniform_(0.5, 2.0)
input = torch.randn(3, 3, 8, 8)
results = {"model": model.state_dict(), "input": input}
for name in sorted(COMPOSITES):
    kwargs = {"low": torch.full_like(input, -3.0), "high": torch.full_like(input, 3.0)} if name == "epsilon_gamma_box" else {}
    composite = COMPOSITES[name](canonizers=[SequentialMergeBatchNorm()], **kwargs)
    with Gradient(model, composite) as attributor:
        results[name] = attributor(input, torch.eye(4)[[0, 2, 3]])[1]
mixed = MixedComposite([NameMapComposite([(["0"], Epsilon())]),
                        EpsilonGammaBox(low=torch.full_like(input, -3.0), high=torch.full_like(input, 3.0))])
with Gradient(model, mixed) as attributor:
    results["mixed"] = attributor(input, torch.eye(4)[[0, 2, 3]])[1]
torch.save(results, os.path.join(out_dir, "relevance.pt"))
print("zennit usage ran on lrp_lightning")
'''

# Behaviours a zennit user's code can rely on, each recorded as plain values (outcomes of calls, stored keys, shapes,
# tensors) in ``behaviours``: run on lrp_lightning under the alias (after USAGE, in its subprocess) and on the real
# zennit in the test process, then compared entry by entry.
BEHAVIOURS = r'''
import torch
from zennit.attribution import Occlusion
from zennit.cmap import LazyColorMapCache
from zennit.core import Hook, Stabilizer, stabilize
from zennit.image import imgify

torch.set_default_dtype(torch.float64)


def outcome(call):
    """("ok", value) or ("raises", exception type name)."""
    try:
        return ("ok", call())
    except Exception as error:
        return ("raises", type(error).__name__)


behaviours = {}

# Occlusion: a window / stride given as the input's full shape (batch dimension first) runs; relevance of the input's
# shape (the values differ by design, see the Occlusion docstring)
torch.manual_seed(0)
occlusion_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
occlusion_input = torch.randn(2, 3, 4, 4)


def occlude(window, stride):
    with Occlusion(occlusion_model, window=window, stride=stride) as attributor:
        return tuple(attributor(occlusion_input, torch.eye(5)[[0, 1]])[1].shape)


behaviours["occlusion"] = {
    repr((window, stride)): outcome(lambda: occlude(window, stride))
    for window, stride in [((2, 3, 4, 4), (2, 3, 4, 4)), ((1, 3, 4, 4), (1, 3, 4, 4)), ((1, 3, 2, 2), (1, 3, 2, 2)),
                           ((1, 3, 2, 2), (1, 1, 2, 2)), ((2, 3, 4, 4), 1), (2, (1, 3, 2, 2)), ((1, 3, 2, 2), 2),
                           ((3, 2, 2), (1, 3, 2, 2)), (4, 4), ((2, 2), (2, 2))]
}

# stabilize and Stabilizer: every combination, an int dim included; both give the same values
denominator = torch.tensor([[1.0, -2.0, 0.0, 0.3], [3.0, 0.5, -0.1, 0.0], [-1e-3, 2e-3, 4.0, -4.0]])
behaviours["stabilize"] = {}
for dim in (None, 0, 1, -1, (0,), [1], (0, 1)):
    for clip in (False, True):
        for norm_scale in (False, True):
            key = repr((dim, clip, norm_scale))
            behaviours["stabilize"][key] = (
                outcome(lambda: stabilize(denominator, 0.1, clip, norm_scale, dim)),
                outcome(lambda: Stabilizer(0.1, clip, norm_scale, dim)(denominator)),
            )


# custom hooks: forward runs on every forward of the module (also without grad and when inactive), backward only when
# active; stored_tensors holds what forward put there and, after a backward, "grad_output"
class Recording(Hook):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, module, input, output):
        self.calls.append(("forward", type(input).__name__, len(input), torch.is_grad_enabled()))
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        self.calls.append(("backward", len(grad_input), len(grad_output)))


class ForwardOnly(Hook):
    def forward(self, module, input, output):
        self.stored_tensors["output_shape"] = tuple(output.shape)


def shapes(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape))
    return [shapes(item) for item in value] if isinstance(value, (tuple, list)) else value


def stored(hook):
    return {key: shapes(value) for key, value in sorted(hook.stored_tensors.items())}


torch.manual_seed(0)
linear, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
steps = []
hook = Recording()
handles = hook.register(linear)
linear(x)
steps.append(("no input requires grad", list(hook.calls), stored(hook)))
with torch.no_grad():
    linear(x)
steps.append(("no grad", list(hook.calls), stored(hook)))
x.requires_grad_()
hook.active = False
linear(x).sum().backward()
steps.append(("inactive, backward", list(hook.calls), stored(hook)))
hook.active = True
output = linear(x)
steps.append(("active, forward", list(hook.calls), stored(hook)))
gradient_at_output = torch.randn(4, 2)
output.backward(gradient_at_output)
steps.append(("active, backward", list(hook.calls), stored(hook)))
steps.append(("grad_output is the gradient at the output",
              outcome(lambda: torch.equal(hook.stored_tensors["grad_output"][0], gradient_at_output))))
handles.remove()
steps.append(("handles removed", stored(hook)))
forward_only = ForwardOnly()
handles = forward_only.register(linear)
linear(x).sum().backward()
steps.append(("a forward-only hook, backward", stored(forward_only)))
handles.remove()
behaviours["hook"] = steps

# imgify: a grid is a bool or a pair of ints; anything else is a TypeError
images = torch.rand(4, 8, 8)
behaviours["imgify_grid"] = {
    repr(grid): outcome(lambda: imgify(images, grid=grid).size)
    for grid in (True, False, (2, 2), [2, 2], (1, 4), (3, 3), 2, 1, 2.0, (2,), (1, 2, 2), (2.0, 2), (True, 2), "ab",
                 ((2,), 2))
}

# LazyColorMapCache: a new source for a compiled entry changes that ColorMap in place
cache = LazyColorMapCache({"red": "000,f00", "green": "000,0f0"})
compiled = cache["red"]
palette_before = compiled.palette().copy()
cache["red"] = "000,00f"
behaviours["lazy_cmap"] = {
    "same instance": cache["red"] is compiled,
    "source of the earlier instance": compiled.source,
    "its palette changed": bool((compiled.palette() != palette_before).any()),
    "uncompiled entry": cache["green"].source,
    "names": sorted(cache),
}
'''


@pytest.fixture(scope="module")
def aliased_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("zennit_alias")
    save_behaviours = '\ntorch.save(behaviours, os.path.join(out_dir, "behaviours.pt"))\n'
    completed = subprocess.run(
        [sys.executable, "-c", ALIAS + USAGE + BEHAVIOURS + save_behaviours, str(out_dir)], cwd=REPO,
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return out_dir


def test_documented_zennit_usage_runs_on_lrp_lightning(aliased_run):
    assert (aliased_run / "relevance_grid.png").stat().st_size > 0
    assert sorted(path.name for path in aliased_run.glob("*.png")) == sorted(
        ["input_000.png", "input_001.png", "relevance_000.png", "relevance_001.png", "input_grid.png",
         "relevance_grid.png", "relevance_abs_0.png", "newheatmap.png"]
    )


def test_composites_computed_under_the_alias_equal_zennits(aliased_run, float64_default):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.rules import Epsilon

    results = torch.load(aliased_run / "relevance.pt")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, eps=1e-12), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(5 * 3 * 3, 6),
        torch.nn.ReLU(), torch.nn.Linear(6, 4),
    ).eval()
    model.load_state_dict(results["model"])
    input, target = results["input"], torch.eye(4)[[0, 2, 3]]
    box = {"low": torch.full_like(input, -3.0), "high": torch.full_like(input, 3.0)}
    composites = {
        name: zennit_composites.COMPOSITES[name](
            canonizers=[SequentialMergeBatchNorm()], **(box if name == "epsilon_gamma_box" else {})
        )
        for name in zennit_composites.COMPOSITES
    }
    composites["mixed"] = zennit_composites.MixedComposite(
        [zennit_composites.NameMapComposite([(["0"], Epsilon())]), zennit_composites.EpsilonGammaBox(**box)]
    )
    assert set(composites) <= set(results)
    for name, composite in composites.items():
        with zennit_attribution.Gradient(model, composite) as attributor:
            expected = attributor(input, target)[1]
        error = ((expected - results[name]).abs().max() / expected.abs().max()).item()
        assert error < 1e-9, f"{name}: relative error {error:.2e}"


@pytest.fixture(scope="module")
def behaviours(aliased_run):
    """(lrp_lightning's behaviours under the alias, the real zennit's)."""
    previous = torch.get_default_dtype()
    namespace: dict = {}
    try:
        exec(BEHAVIOURS, namespace)
    finally:
        torch.set_default_dtype(previous)
    return torch.load(aliased_run / "behaviours.pt", weights_only=False), namespace["behaviours"]


def assert_same_behaviour(behaviours, name):
    ours, zennit = behaviours[0][name], behaviours[1][name]
    if isinstance(zennit, dict):
        assert sorted(ours) == sorted(zennit)
        different = {key: (ours[key], zennit[key]) for key in zennit if not _equal(ours[key], zennit[key])}
        assert not different, f"{name}: (ours, zennit) differ for {different}"
    else:
        assert _equal(ours, zennit), f"{name}: ours {ours!r}, zennit {zennit!r}"


def _equal(ours, zennit) -> bool:
    if isinstance(zennit, torch.Tensor):
        return isinstance(ours, torch.Tensor) and ours.dtype == zennit.dtype and torch.equal(ours, zennit)
    if isinstance(zennit, (tuple, list)):
        return (isinstance(ours, (tuple, list)) and len(ours) == len(zennit)
                and all(_equal(a, b) for a, b in zip(ours, zennit)))
    if isinstance(zennit, dict):
        return isinstance(ours, dict) and sorted(ours) == sorted(zennit) and all(_equal(ours[k], zennit[k]) for k in zennit)
    return ours == zennit


def test_occlusion_runs_with_a_full_shape_window_and_stride_as_zennit(behaviours):
    assert_same_behaviour(behaviours, "occlusion")
    assert behaviours[0]["occlusion"][repr(((2, 3, 4, 4), (2, 3, 4, 4)))] == ("ok", (2, 3, 4, 4))


def test_stabilize_and_stabilizer_take_every_dim_as_zennit(behaviours):
    assert_same_behaviour(behaviours, "stabilize")
    for function, instance in behaviours[0]["stabilize"].values():
        assert function[0] == "ok" and _equal(function, instance)


def test_custom_hooks_run_forward_always_and_store_grad_output_as_zennit(behaviours):
    assert_same_behaviour(behaviours, "hook")


def test_imgify_rejects_a_grid_that_is_no_bool_or_pair_as_zennit(behaviours):
    assert_same_behaviour(behaviours, "imgify_grid")


def test_lazy_colormap_cache_recompiles_an_entry_in_place_as_zennit(behaviours):
    assert_same_behaviour(behaviours, "lazy_cmap")
    assert behaviours[0]["lazy_cmap"]["same instance"]
