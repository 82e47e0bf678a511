"""ONNX Runtime backend: sampling a trained denoiser exported to ONNX."""
