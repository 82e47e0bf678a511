"""`vdm schedule`: JSON plans, the log-SNR plot, one-line errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner
from vdm.cli.main import app

import vdm_ref


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["schedule", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def _config(tmp_path: Path, name: str, **cfg: object) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"_class_name": name, "_diffusers_version": "0.42.1", **cfg}))
    return path


def test_from_diffusers_json_is_the_plan(tmp_path: Path) -> None:
    """The CogVideoX-style DDIM config: trailing spacing per spec 6.2, v prediction, notes listed."""
    path = _config(tmp_path, "DDIMScheduler", timestep_spacing="trailing", prediction_type="v_prediction",
                   rescale_betas_zero_snr=True, clip_sample=False)
    code, out, err = invoke("--from-diffusers", str(path), "--steps", "13", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["family"] == "vp" and plan["sampler"] == "ddim" and plan["prediction"] == "v"
    assert plan["timesteps"] == vdm_ref.inference_timesteps(1000, 13, "trailing").tolist()
    assert plan["sigmas"] is None and plan["options"]["final_abar"] == "one"
    assert any("t - T // N" in note for note in plan["notes"])  # 922 - 76 = 846, not 845


def test_flow_config_json_has_the_final_level(tmp_path: Path) -> None:
    path = _config(tmp_path, "FlowMatchEulerDiscreteScheduler", shift=3.0)
    code, out, _ = invoke("--from-diffusers", str(path), "--steps", "4", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["family"] == "flow" and len(plan["sigmas"]) == 5 and plan["sigmas"][-1] == 0.0
    u = np.linspace(1.0, 1e-3, 4)
    np.testing.assert_allclose(plan["sigmas"][:-1], 3 * u / (1 + 2 * u), rtol=1e-15)  # shifted once
    np.testing.assert_allclose(plan["timesteps"], 1000 * np.array(plan["sigmas"][:-1]), rtol=1e-15)


def test_dynamic_shift_takes_seq_len(tmp_path: Path) -> None:
    path = _config(tmp_path, "FlowMatchEulerDiscreteScheduler", use_dynamic_shifting=True)
    code, out, _ = invoke("--from-diffusers", str(path), "--steps", "3", "--seq-len", "4096", "--json")
    u = np.array([1.0, 0.5005])
    want = math.exp(1.15) * u / (1 + (math.exp(1.15) - 1) * u)
    assert code == 0
    np.testing.assert_allclose(json.loads(out)["sigmas"][:2], want, rtol=1e-12)


def test_plot_several_schedules(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "EulerDiscreteScheduler", timestep_spacing="trailing")
    png = tmp_path / "snr.png"
    code, out, err = invoke("cosine", "flow", "edm", "--from-diffusers", str(cfg), "--steps", "12", "--plot", str(png))
    assert code == 0, err
    assert "wrote" in out and "cosine: vp, ddim" in out and "EulerDiscreteScheduler" in out
    img = Image.open(png)
    assert img.size == (760, 600)
    colours = {c for _, c in img.convert("RGB").getcolors(1 << 20)}
    assert {(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)} <= colours  # four series drawn


def test_plot_of_one_name(tmp_path: Path) -> None:
    png = tmp_path / "cos.png"
    code, _, err = invoke("cosine", "--plot", str(png))
    assert code == 0, err
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        ((), None, "name a schedule"),
        (("warp",), None, "unknown schedule 'warp'"),
        (("--from-diffusers", "{p}"), "{not json", "is not valid JSON"),
        (("--from-diffusers", "{p}"), "[1, 2]", "must hold a JSON object"),
        (("--from-diffusers", "{p}"), '{"_class_name": "KarrasVeScheduler"}', "unknown scheduler class"),
        (("--from-diffusers", "{p}"), '{"_class_name": "DDIMScheduler", "beta_max": 1}', "unknown config key"),
        (("--from-diffusers", "{p}", "--steps", "1001"), '{"_class_name": "DDIMScheduler"}', "impossible"),
        (("cosine", "--steps", "0"), None, "--steps"),
        (("--from-diffusers", "{missing}"), None, "cannot read"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: tuple, content: str | None, message: str) -> None:
    path = tmp_path / "scheduler_config.json"
    if content is not None:
        path.write_text(content)
    args = tuple(a.format(p=path, missing=tmp_path / "nope.json") for a in args)
    code, out, err = invoke(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_plot_without_pillow_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan needs NumPy only; the plot needs Pillow, which comes with the torch extra."""
    import sys

    monkeypatch.setitem(sys.modules, "PIL", None)
    code, out, _ = invoke("cosine", "--steps", "4", "--json")
    assert code == 0 and json.loads(out)["family"] == "vp"
    code, _, err = invoke("cosine", "--plot", str(tmp_path / "x.png"))
    assert code == 2 and err.strip() == "error: vdm schedule --plot needs Pillow: pip install 'vdm[torch]'"
    assert not (tmp_path / "x.png").exists()
