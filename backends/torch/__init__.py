"""PyTorch backend: spec operations on tensors, the video denoiser, data and training."""

from ..extras import require

require("vdm.backends.torch", "torch")  # one line naming the extra, not a traceback from a submodule
