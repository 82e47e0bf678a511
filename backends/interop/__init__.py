"""Reading other libraries' configurations into vdm terms (NumPy and vdm_ref only; the libraries
themselves are never imported here)."""
