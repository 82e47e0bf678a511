"""ONNX export of trained denoisers."""

from vdm.backends.extras import require

require("vdm.export", "torch", "ort")  # one line naming the extra, not a traceback from a submodule
