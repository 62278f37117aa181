"""Transformer support: the gradient-view rules and the canonizers that make attention explicit.

``gradient_rules`` (AttnLRP's and CP-LRP's rules in the gradient x input view), ``attention``
(``nn.MultiheadAttention`` and ``nn.Transformer*Layer`` canonizers), ``eager_attention`` (the
explicit-attention mechanism shared by the library canonizers), ``huggingface`` and ``timm`` (their
attention, gated-MLP and RMSNorm canonizers) and ``tokens`` (token-id inputs: embeddings, explained
positions, class scores of language models). The composites that use them, ``AttnLRP`` and
``CPLRP``, live in :mod:`lrp_lightning.composites`.
"""
