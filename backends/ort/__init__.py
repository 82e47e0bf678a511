"""ONNX Runtime backend: sampling a trained denoiser exported to ONNX."""

from ..extras import require

require("vdm.backends.ort", "ort")  # one line naming the extra, not a traceback from a submodule
