"""ONNX export of trained denoisers."""
