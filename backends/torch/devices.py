"""Device names given by users ("auto", "cpu", "cuda", "cuda:N") resolved to torch devices."""

from __future__ import annotations

import torch


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA if available else CPU; a clear error when CUDA is asked for but missing."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name} requested but CUDA is not available "
                             f"(torch {torch.__version__}, cuda build: {torch.version.cuda or 'none'})")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        index = int(name.split(":", 1)[1])
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device(name)
    return torch.device("cpu")
