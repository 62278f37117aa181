"""The built-in demo: synthetic shapes data with a "Clever Hans" watermark, a small CNN, and
``python -m lrp_lightning.demo``, which trains it with ``AttributionCallback`` logging to TensorBoard."""
