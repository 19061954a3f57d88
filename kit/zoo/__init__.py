"""Bundled models and data: the digits MLP/CNN trained here, the pretrained all-MiniLM-L6-v2
(transformers is imported only when it is loaded), the builders artifacts rebuild them with,
and ``slimkit demo``'s recipes."""
from . import minilm  # noqa: F401  registers the "minilm" builder
from .minilm import fidelity, load_minilm
from .models import DigitsCNN, DigitsMLP, build, pretrained_digits, register_builder

__all__ = ["pretrained_digits", "load_minilm", "fidelity", "DigitsCNN", "DigitsMLP", "build", "register_builder"]
