"""Benchmark harness and results database for supervised-contrastive fine-tuning (Gunel et al., 2021)."""

__version__ = "0.1.0"
