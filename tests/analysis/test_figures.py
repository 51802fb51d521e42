"""The supplementary figures plot the library's own gradients, which equal the closed forms."""

import json

import numpy as np
import pytest
import torch

from harmonicdet.analysis.figures import (
    harmonic_iou_curves,
    offset_gradient_surface,
    probability_gradient_surface,
    read_loss_curve,
)
from harmonicdet.cli import main

P = torch.tensor([0.01, 0.05, 0.3, 0.9, 1.0], dtype=torch.float64)
T = torch.tensor([-2.0, -0.4, 0.0, 0.2, 1.0, 2.5], dtype=torch.float64)


def test_fig1_surfaces_equal_eq_s5_and_the_flat_standard_gradient():
    pp, tt = torch.meshgrid(P, T, indexing="ij")
    loc = torch.where(tt.abs() < 1, 0.5 * tt**2, tt.abs() - 0.5)
    dloc = torch.where(tt.abs() < 1, tt, tt.sign())
    expected = ((1 + pp + torch.exp(-loc) * torch.log(pp)) * dloc).abs()
    torch.testing.assert_close(offset_gradient_surface(P, T, harmonic=True), expected, rtol=1e-12, atol=1e-12)
    standard = offset_gradient_surface(P, T, harmonic=False)
    torch.testing.assert_close(standard, dloc.abs())
    assert (standard == standard[0]).all()  # independent of p


def test_fig2_surface_equals_eq_s10():
    loc = torch.tensor([0.0, 0.5, 2.0, 5.0], dtype=torch.float64)
    pp, ll = torch.meshgrid(P, loc, indexing="ij")
    expected = ll - (1 + torch.exp(-ll)) / pp
    torch.testing.assert_close(probability_gradient_surface(P, loc), expected, rtol=1e-12, atol=1e-12)


def test_fig4_curves_equal_eq_s11():
    iou = torch.linspace(0, 1, 11, dtype=torch.float64)
    gammas = [0.0, 0.5, 1.0]
    expected = torch.stack([(1 + iou) ** g * (1 - iou) for g in gammas])
    torch.testing.assert_close(harmonic_iou_curves(iou, gammas), expected, rtol=1e-12, atol=1e-12)


def test_cli_writes_pngs_whose_data_are_the_closed_forms(tmp_path):
    """The saved arrays against Eq. S-5, S-10 and S-11 evaluated here on the saved grids (not the library's code)."""
    assert main(["figures", "--out", str(tmp_path), "--gammas", "0", "0.5", "0.8"]) == 0
    for name in ("fig1_offset_gradient.png", "fig2_probability_gradient.png", "fig4_hiou.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = np.load(tmp_path / "figure_data.npz")
    assert set(saved.files) == {"p", "t", "loc", "iou", "gammas", "fig1a_harmonic_dt", "fig1b_standard_dt",
                                "fig2_harmonic_dp", "fig4_hiou"}
    np.testing.assert_array_equal(saved["gammas"], [0.0, 0.5, 0.8])
    p, t, loc, iou = saved["p"], saved["t"], saved["loc"], saved["iou"]
    assert p.min() > 0 and p.max() == 1.0 and t.min() < -1 < 1 < t.max()  # both SmoothL1 branches, p up to 1
    pp, tt = np.meshgrid(p, t, indexing="ij")
    smooth_l1 = np.where(np.abs(tt) < 1, 0.5 * tt**2, np.abs(tt) - 0.5)  # L = SmoothL1(t), beta 1
    dl_dt = np.where(np.abs(tt) < 1, tt, np.sign(tt))
    # Eq. S-5: |dL_Har/dt| = |(1 + p + exp(-L) log p) dL/dt|; the standard loss: |dL/dt|
    s5 = np.abs((1 + pp + np.exp(-smooth_l1) * np.log(pp)) * dl_dt)
    np.testing.assert_allclose(saved["fig1a_harmonic_dt"], s5, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(saved["fig1b_standard_dt"], np.abs(dl_dt), rtol=1e-12, atol=1e-12)
    # Eq. S-10: dL_Har/dp = L - (1 + exp(-L)) / p
    pp, ll = np.meshgrid(p, loc, indexing="ij")
    np.testing.assert_allclose(saved["fig2_harmonic_dp"], ll - (1 + np.exp(-ll)) / pp, rtol=1e-12, atol=1e-12)
    # Eq. S-11: (1 + IoU)^gamma (1 - IoU), one row per gamma
    s11 = np.stack([(1 + iou) ** g * (1 - iou) for g in (0.0, 0.5, 0.8)])
    np.testing.assert_allclose(saved["fig4_hiou"], s11, rtol=1e-12, atol=1e-12)


def test_cli_refuses_gamma_above_one(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path), "--gammas", "0.5", "1.5"]) == 2
    assert "S-13" in capsys.readouterr().err


def test_fig3_from_training_logs(tmp_path):
    runs = []
    for name, scale in (("standard", 1.0), ("harmonic", 1.5)):
        path = tmp_path / name / "metrics.jsonl"
        path.parent.mkdir()
        lines = [json.dumps({"iteration": i, "loss": scale / (1 + i)}) for i in range(30)]
        lines.insert(5, json.dumps({"iteration": 5, "bbox_AP": 0.1}))  # eval records are skipped
        path.write_text("\n".join(lines) + "\n")
        runs.append(str(path))
    it, val = read_loss_curve(runs[0])
    assert len(it) == 30 and val[3] == pytest.approx(0.25)
    assert main(["figures", "--out", str(tmp_path / "out"), "--log", *runs]) == 0
    assert (tmp_path / "out" / "fig3_training_loss.png").stat().st_size > 1000
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iteration": 1, "loss": 1.0}\nnot json\n{"iteration": 2, "loss": 0.5}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2 is not valid JSON"):
        read_loss_curve(bad)
    torn = tmp_path / "torn.jsonl"  # a last line cut short by a kill is dropped, as every log reader does
    torn.write_text('{"iteration": 1, "loss": 1.0}\n{"iteration": 2, "lo')
    assert read_loss_curve(torn)[1].tolist() == [1.0]
