"""A tiny torchvision ViT and the rules of DESIGN's gradient view written out independently of the library
(epsilon -> 0), with the ViT's forward under them (exposed as fixtures by ``tests/transformer/conftest.py``).

Linear layers and embeddings: the plain gradient; LayerNorm: its standard deviation held constant;
element-wise activations: the identity rule, f(x) = x * (f(x) / x) with the ratio held constant;
attention: CP-LRP holds the softmax weights constant, AttnLRP passes the softmax's plain gradient and
splits each product uniformly (half of the gradient to each factor of Q K^T and of A V).
"""
import math

import torch
import torch.nn.functional as F


def tiny_vit(bias=True, seed=0):
    """torchvision ``VisionTransformer`` on 8x8 images (4x4 patches, two layers of width 8, 3 classes), weights
    drawn from N(0, 0.5) after ``torch.manual_seed(seed)``, biases zero unless ``bias``; eval mode."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(image_size=8, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=3)
    for name, parameter in model.named_parameters():
        parameter.data.normal_(0, 0.5)
        if not bias and name.endswith("bias"):
            parameter.data.zero_()
    return model.eval()


def gradient_share(tensor, share):
    """``tensor`` unchanged, its gradient multiplied by ``share``."""
    return tensor * share + (tensor * (1 - share)).detach()


def layer_norm_by_hand(x, norm):
    """``norm`` (a LayerNorm) applied to ``x`` with its standard deviation held constant."""
    sigma = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt().detach()
    return (x - x.mean(-1, keepdim=True)) / sigma * norm.weight + norm.bias


def identity_rule(function, x):
    """``function(x)`` as ``x * (function(x) / x)``, the ratio held constant."""
    return x * (function(x) / x).detach()


def attention_by_hand(x, attention, rule, softmaxes=None):
    """``nn.MultiheadAttention`` (batch first, no mask) under the rule; appends ``(scores, weights)`` of
    the softmax, their gradients retained, to ``softmaxes`` if given."""
    n, t, d = x.shape
    heads = attention.num_heads
    q, k, v = (u.reshape(n, t, heads, d // heads).transpose(1, 2)
               for u in F.linear(x, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1))
    if rule == "attn_lrp":  # uniform at Q K^T and at A V
        q, k, v = gradient_share(q, 0.5), gradient_share(k, 0.5), gradient_share(v, 0.5)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d // heads)
    weights = scores.softmax(-1)
    if softmaxes is not None and weights.requires_grad:
        scores.retain_grad()
        weights.retain_grad()
        softmaxes.append((scores, weights))
    weights = gradient_share(weights, 0.5) if rule == "attn_lrp" else weights.detach()
    mixed = (weights @ v).transpose(1, 2).reshape(n, t, d)
    return F.linear(mixed, attention.out_proj.weight, attention.out_proj.bias)


def vit_by_hand(model, image, rule, softmaxes=None):
    """torchvision's VisionTransformer forward (pre-norm blocks, GELU) under the rules written out above
    (``softmaxes`` as for :func:`attention_by_hand`)."""
    n = image.shape[0]
    x = model.conv_proj(image).reshape(n, model.hidden_dim, -1).permute(0, 2, 1)
    x = torch.cat([model.class_token.expand(n, -1, -1), x], dim=1) + model.encoder.pos_embedding
    for block in model.encoder.layers:
        x = x + attention_by_hand(layer_norm_by_hand(x, block.ln_1), block.self_attention, rule, softmaxes)
        y = layer_norm_by_hand(x, block.ln_2)
        x = x + block.mlp[3](identity_rule(F.gelu, block.mlp[0](y)))
    return model.heads(layer_norm_by_hand(x, model.encoder.ln)[:, 0])
