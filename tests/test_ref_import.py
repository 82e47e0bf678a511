"""vdm_ref must stay importable with NumPy alone: no deep-learning runtime behind it."""

from __future__ import annotations

import json
import subprocess
import sys


def test_import_pulls_in_no_framework() -> None:
    code = (
        "import json, sys, vdm_ref\n"
        "names = [n for n in vdm_ref.__all__ if not hasattr(vdm_ref, n)]\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "print(json.dumps({'missing': names, 'heavy': heavy, 'version': vdm_ref.SPEC_VERSION}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert result == {"missing": [], "heavy": [], "version": "2.1.0"}


def test_star_import_exports_all() -> None:
    namespace: dict[str, object] = {}
    exec("from vdm_ref import *", namespace)
    import vdm_ref

    assert set(vdm_ref.__all__) <= set(namespace)
    assert len(vdm_ref.__all__) == len(set(vdm_ref.__all__))
