"""vdm backends: implementations of the spec held to the NumPy reference."""
