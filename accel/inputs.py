"""Example inputs: the core's one rule (:mod:`slimkit.inputs`), used by every backend."""
from slimkit.inputs import (Inputs, ModelInputs, apply, batch_size, call, check_inputs, names,  # noqa: F401
                            tensors, to_device)
