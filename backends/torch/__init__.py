"""PyTorch backend: spec operations on tensors, the video denoiser, data and training."""
