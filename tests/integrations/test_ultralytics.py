"""The Ultralytics integration (extra ``[ultralytics]``): the criterion, offline training, resume, data, consistency."""

import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ultralytics")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from harmonicdet.cli import main as cli_main  # noqa: E402
from harmonicdet.data.yolo import read_yolo_labels  # noqa: E402
from harmonicdet.integrations.ultralytics import (  # noqa: E402
    HarmonicDetectionLoss,
    HarmonicDetectionModel,
    HarmonicDetectionTrainer,
    build_criterion,
    loss_options,
)

REPO = Path(__file__).resolve().parents[2]


def _model(cfg, nc=3, **loss):
    torch.manual_seed(0)
    model = HarmonicDetectionModel(cfg, nc=nc, verbose=False, loss=loss or None)
    model.args = get_cfg()
    return model.train()


def _batch(n_images=2, empty=False, zero_boxes=False):
    torch.manual_seed(1)
    img = torch.rand(n_images, 3, 64, 64)
    if empty:
        return {"img": img, "batch_idx": torch.zeros(0), "cls": torch.zeros(0, 1), "bboxes": torch.zeros(0, 4)}
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.2, 0.3], [0.5, 0.5, 0.5, 0.5]])
    return {"img": img, "batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[0.0], [2.0], [1.0]]),
            "bboxes": torch.zeros_like(boxes) if zero_boxes else boxes}


def _loss_and_grads(model, criterion, batch):
    model.zero_grad()
    loss, items = criterion(model(batch["img"]), batch)
    loss.sum().backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    return loss.detach(), items, grads


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_standard_is_ultralytics_loss(cfg):
    model = _model(cfg, loss="standard")
    batch = _batch()
    reference = DetectionModel.init_criterion(model)  # v8DetectionLoss, or E2ELoss for YOLO26
    ours = model.init_criterion()
    assert type(ours) is type(reference) or isinstance(ours, HarmonicDetectionLoss)
    ref_loss, ref_items, ref_grads = _loss_and_grads(model, reference, batch)
    loss, items, grads = _loss_and_grads(model, ours, batch)
    assert torch.equal(loss, ref_loss)
    assert list(items) == list(ref_items) and all(torch.equal(items[k], ref_items[k]) for k in items)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
def test_unit_factors_give_ultralytics_terms(cfg, monkeypatch):
    """With the factors at 0 the harmonic criterion's terms (entropies added back) sum to Ultralytics' loss."""
    import harmonicdet.integrations.ultralytics.criterion as criterion

    model = _model(cfg)
    batch = _batch()
    preds = model(batch["img"])
    ref_loss, _ = DetectionModel.init_criterion(model)(preds, batch)
    monkeypatch.setattr(criterion, "harmonic_terms", lambda cls, loc, **kw: (cls, loc))
    loss, items = build_criterion(model, loss_options("harmonic"))(preds, batch)
    assert list(items)[:2] == ["box_loss", "cls_loss"]
    torch.testing.assert_close(loss[1], ref_loss[1], rtol=1e-5, atol=1e-6)  # cls
    torch.testing.assert_close(loss[0] + loss[2], ref_loss[0] + ref_loss[2], rtol=1e-5, atol=1e-6)  # box + dfl/l1


def _fixed_assignment(criterion, pred_distri):
    """Ultralytics-shaped inputs with a fixed assignment: anchor 0 of image 0 is foreground for class 1."""
    b, a, nc = 1, 6, criterion.nc
    anchor_points = torch.tensor([[2.5, 2.5], [3.5, 2.5], [2.5, 3.5], [0.5, 0.5], [6.5, 6.5], [7.5, 0.5]])
    stride_tensor = torch.full((a, 1), 8.0)
    target_bboxes = torch.tensor([[1.0, 1.0, 4.0, 4.5]]).repeat(b, a, 1)  # grid units
    target_scores = torch.zeros(b, a, nc)
    target_scores[0, 0, 1] = 0.6
    fg_mask = torch.zeros(b, a, dtype=torch.bool)
    fg_mask[0, 0] = True
    pred_bboxes = criterion.bbox_decode(anchor_points, pred_distri)
    return anchor_points, stride_tensor, target_bboxes, target_scores, fg_mask, pred_bboxes


def test_coupling_cls_gradient_follows_box_quality():
    """Only the box of a foreground anchor changes: its classification gradient changes (harmonic), not (standard)."""
    model = _model("yolov8n.yaml", nc=3)
    criterion = build_criterion(model, loss_options("harmonic"))
    torch.manual_seed(2)
    base = torch.randn(1, 6, 4 * criterion.reg_max)
    better = base.clone()
    better[0, 0] = base[0, 0] + 3 * torch.randn(4 * criterion.reg_max)  # another box for anchor 0 only
    logits = torch.randn(1, 6, 3)
    imgsz = torch.tensor([64.0, 64.0])

    def cls_grad(pred_distri, harmonic, crit=criterion):
        scores = logits.clone().requires_grad_(True)
        ap, st, tb, ts, fg, pb = _fixed_assignment(crit, pred_distri)
        tss = ts.sum().clamp(min=1)
        if harmonic:
            terms = crit.anchor_terms(scores, pred_distri, pb, ap, st, imgsz, ts.argmax(-1), tb, ts, fg)
            loss = crit.harmonic_loss(terms, tss).sum()
        else:  # Ultralytics' formula: BCE / T + BboxLoss
            box, dfl = crit.bbox_loss(pred_distri, pb, ap, tb, ts, tss, fg, imgsz, st)
            loss = crit.bce(scores, ts).sum() / tss * crit.hyp.cls + box + dfl
        loss.backward()
        return scores.grad[0, 0]

    assert not torch.allclose(cls_grad(base, True), cls_grad(better, True), atol=1e-6)
    assert torch.equal(cls_grad(base, False), cls_grad(better, False))
    # with constant factors it is Eq. S-1's (1 + beta_r) times the BCE gradient
    detached = build_criterion(model, loss_options("harmonic", detach_factors=True))
    for distri in (base, better):
        grad = cls_grad(distri, True, detached)
        beta_r = detached.last_stats["beta_r"]
        torch.testing.assert_close(grad, (1 + beta_r) * cls_grad(distri, False), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cfg", ["yolov8n.yaml", "yolo26n.yaml"])
@pytest.mark.parametrize("case", ["empty", "no_foreground"])
def test_no_targets_finite(cfg, case):
    model = _model(cfg, loss="harmonicdet")
    batch = _batch(empty=case == "empty", zero_boxes=case == "no_foreground")
    loss, items, grads = _loss_and_grads(model, model.init_criterion(), batch)
    assert torch.isfinite(loss).all() and all(torch.isfinite(v).all() for v in items.values())
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0  # background BCE still trains


def test_options_validated_early():
    trainer = HarmonicDetectionTrainer.with_options("harmonicdet", detach_factors=True, tc_margin=0.3)
    assert trainer.loss_spec == {"loss": "harmonicdet", "detach_factors": True, "tc_margin": 0.3}
    assert issubclass(trainer, HarmonicDetectionTrainer) and trainer.explicit_options
    for bad in ({"loss": "qfl"}, {"loss": "harmonic", "box_loss": "giou"}, {"loss": "harmonic", "nope": 1},
                {"loss": "harmonic_iou", "gamma": 2.0}):
        with pytest.raises(ValueError):
            HarmonicDetectionTrainer.with_options(**bad)
    criterion = build_criterion(_model("yolov8n.yaml"), loss_options("harmonicdet"))
    assert criterion.term_names == ("box_loss", "cls_loss", "dfl_loss", "hiou_loss", "tc_loss")
    assert criterion.loss_names == criterion.item_names == ("box_loss", "cls_loss", "dfl_loss")


def test_box_loss_none_is_accepted_alone_and_refused_otherwise():
    """``box_loss="none"`` (HIoU in CIoU's place) needs alpha > 0; any other box_loss is refused, naming it."""
    assert loss_options("harmonicdet", box_loss="none").box_loss == "none"
    assert loss_options("harmonic_iou", box_loss=None) == loss_options("harmonic_iou")  # left out: CIoU kept
    trainer = HarmonicDetectionTrainer.with_options("harmonicdet", box_loss="none")
    assert trainer.loss_spec == {"loss": "harmonicdet", "box_loss": "none"}
    for preset, options in (("harmonicdet", {"box_loss": "giou"}), ("harmonic_iou", {"box_loss": "smooth_l1"}),
                            ("harmonicdet", {"box_loss": "ciou"}), ("harmonic", {"box_loss": "none"}),
                            ("harmonicdet", {"box_loss": "none", "alpha": 0.0}), ("standard", {"box_loss": "none"})):
        with pytest.raises(ValueError, match="box_loss"):
            loss_options(preset, **options)
        with pytest.raises(ValueError, match="box_loss"):
            HarmonicDetectionTrainer.with_options(preset, **options)


@pytest.mark.parametrize("box_loss", [None, "none"])
def test_harmonic_loss_is_the_hand_computation(box_loss):
    """``harmonicdet`` on a real batch, rebuilt by hand from the criterion's per-anchor terms: L_loc the gain-weighted
    mean of CIoU, DFL's KL and HIoU (``box_loss="none"``: without the CIoU part, whose logged entry is then 0),
    Eq. S-1's factors, the split of the localisation total by each part's value, the TC term."""
    from harmonicdet.losses.harmonic_iou_loss import harmonic_iou_from_iou
    from harmonicdet.losses.task_contrast_loss import task_contrast_loss

    model = _model("yolov8n.yaml")
    batch = _batch()
    options = loss_options("harmonicdet", **({} if box_loss is None else {"box_loss": box_loss}))
    criterion = build_criterion(model, options)
    seen = {}
    anchor_terms = criterion.anchor_terms
    criterion.anchor_terms = lambda *a: seen.setdefault("terms", anchor_terms(*a))
    loss, items = criterion(model(batch["img"]), batch)
    loss = loss.detach()
    t = {k: v.detach() if k == "label" else v.detach().double() for k, v in seen["terms"].items()}
    assert t["iou"].numel() > 0
    hyp, n = criterion.hyp, batch["img"].shape[0]
    g_box, g_cls, g_dfl, alpha = float(hyp.box), float(hyp.cls), float(hyp.dfl), options.alpha
    kl, dfl_kl = t["bce"] - t["cls_entropy"], t["dfl"] - t["dfl_entropy"]
    hiou = harmonic_iou_from_iou(t["iou"], options.gamma)
    parts = {"dfl": (g_dfl, dfl_kl), "hiou": (alpha * g_box, hiou)}
    if box_loss is None:
        parts["box"] = (g_box, t["box"])
    gains = sum(g for g, _ in parts.values())
    loc = sum(g * c for g, c in parts.values()) / gains
    beta_c, beta_r = torch.exp(-kl), torch.exp(-loc)
    w = t["weight"]
    # T = max(1, sum of TAL's scores): the foreground weights are its only non-zero entries
    total = w.sum().clamp(min=1)
    cls = g_cls * (t["cls_bg"] + ((1 + beta_r) * kl).sum() + t["cls_entropy"].sum()) / total
    loc_total = (w * ((1 + beta_c) * gains * loc + g_dfl * t["dfl_entropy"])).sum() / total
    values = {name: (w * (1 + beta_c) * g * c).sum() for name, (g, c) in parts.items()}
    values["dfl"] = values["dfl"] + (w * g_dfl * t["dfl_entropy"]).sum()
    split = {name: loc_total * v / sum(values.values()) for name, v in values.items()}
    gt_prob = t["probs"].gather(1, t["label"].unsqueeze(1)).squeeze(1)
    tc = task_contrast_loss(t["probs"], gt_prob, t["iou"], margin=options.tc_margin).sum() / total
    expected = torch.stack([split.get("box", torch.zeros((), dtype=torch.float64)), cls, split["dfl"],
                            split["hiou"], tc]) * n
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert (float(loss[0]) == 0.0) == (box_loss == "none")
    torch.testing.assert_close(sum(items.values()), loss.sum() / n, rtol=1e-6, atol=0)
    torch.testing.assert_close(items["box_loss"], loss[0] / n + loss[3] / n, rtol=1e-6, atol=0)


def test_study_variants_name_a_preset_and_a_detached_factor(tmp_path, capsys):
    from harmonicdet.apps.yolo_study import variant_loss, variant_options

    assert variant_loss("harmonic") == ("harmonic", {})
    assert variant_loss("harmonic_beta_r") == ("harmonic", {"detach_factors": "beta_r"})
    assert variant_loss("harmonic_iou_beta_c") == ("harmonic_iou", {"detach_factors": "beta_c"})
    assert variant_loss("standard_beta_r") == ("standard_beta_r", {})  # nothing to detach: not a preset
    assert variant_loss("harmonicdet_prob") == ("harmonicdet", {"beta_c_mode": "prob"})
    assert variant_loss("harmonicdet_hiou_only") == ("harmonicdet", {"box_loss": "none"})
    assert variant_loss("harmonic_iou_hiou_only") == ("harmonic_iou", {"box_loss": "none"})
    assert variant_loss("standard_hiou_only") == ("standard_hiou_only", {})
    assert variant_loss("harmonicdet_hiou_only_a1") == ("harmonicdet", {"box_loss": "none", "alpha": 1.0})
    assert variant_options("harmonicdet_hiou_only_a1").alpha == 1.0
    assert variant_options("harmonicdet_hiou_only").box_loss == "none"
    with pytest.raises(ValueError, match="box_loss"):
        variant_options("harmonic_hiou_only")  # no HIoU to stand in CIoU's place
    assert variant_options("harmonicdet_prob").beta_c_mode == "prob" and variant_options("harmonicdet_prob").alpha == 1.5
    assert variant_options("harmonic_beta_r").detach_factors == "beta_r" and variant_options("standard") is None
    out = tmp_path / "out"
    assert cli_main(["yolo-study", "--out", str(out), "--data", str(tmp_path / "data"),
                     "--variants", "harmonic_beta_r", "standard_beta_r"]) == 2
    assert "standard_beta_r" in capsys.readouterr().err and not out.exists() and not (tmp_path / "data").exists()
    # a report from records needs the study's data (its val.json), which --report-only does not make
    assert cli_main(["yolo-study", "--out", str(out), "--data", str(tmp_path / "data"), "--report-only"]) == 2
    assert f"--data {tmp_path / 'data'}: no" in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_yolo_study_status_reads_states_epochs_and_the_time_left_without_writing(tmp_path, capsys):
    """A recorded run (300 s for 10 epochs), one stopped after its third epoch and one not started: 17 epochs
    left at 30 s each; a run recorded in --out but not named is shown too; nothing is written."""
    from harmonicdet.apps.yolo_study import planned_runs, yolo_study_progress
    from harmonicdet.cli import build_parser

    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["yolo-study", "--status", "--out", str(out), "--runs", str(runs), "--epochs", "10",
            "--variants", "harmonicdet", "--seeds", "0", "1", "2"]
    recorded, stopped, new = planned_runs(build_parser().parse_args(argv))
    baseline = replace(recorded, variant="standard")
    for settings in (recorded, baseline):
        folder = out / "runs" / settings.name
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(settings.dump())
        (folder / "eval.json").write_text("{}")
        (folder / "study_timing.json").write_text('{"train_s": 300.0}')
    (runs / stopped.name / "weights").mkdir(parents=True)
    (runs / stopped.name / "config.yaml").write_text(stopped.dump())
    torch.save({"optimizer": {}, "epoch": 2}, runs / stopped.name / "weights" / "last.pt")  # epochs 0-2 done
    files = sorted(tmp_path.rglob("*"))

    progress = yolo_study_progress(build_parser().parse_args(argv))
    assert [(p.name, p.state, p.iteration, p.max_iters, p.seconds_per_iteration) for p in progress] == [
        ("yolov8n-standard-s0", "done", 10, 10, 30.0), ("yolov8n-harmonicdet-s0", "done", 10, 10, 30.0),
        ("yolov8n-harmonicdet-s1", "interrupted", 3, 10, None), ("yolov8n-harmonicdet-s2", "new", 0, 10, None)]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "| run | state | epochs | s/epoch |" in text and "| yolov8n-harmonicdet-s1 | started, resumable | 3/10 |  |" in text
    assert "2 of 4 runs recorded" in text and "yolov8n: 2 runs to finish, 17 epochs to train: 0.1 h in one lane" in text
    assert sorted(tmp_path.rglob("*")) == files
    assert cli_main(argv + ["--epochs", "20"]) == 2  # other settings than the records' are refused, as in training
    assert "recorded with other settings" in capsys.readouterr().err


def test_import_sets_offline_environment(tmp_path):
    """In a clean process the integration sets the offline variables before Ultralytics reads them and leaves the
    settings folder Ultralytics' per-user one (nothing in the working directory); ``ensure_fonts`` (which the trainer
    calls) copies the fonts there, so Ultralytics' dataset check finds them offline."""
    code = (
        "import json, os, socket\n"
        "calls = []\n"
        "def deny(*a, **k):\n"
        "    calls.append(a[:1]); raise OSError('denied')\n"
        "socket.getaddrinfo = socket.create_connection = socket.socket.connect = deny\n"
        "import harmonicdet.integrations.ultralytics as h\n"
        "import ultralytics.utils as u\n"
        "h.ensure_fonts()\n"
        "print(json.dumps({k: os.environ.get(k) for k in ('YOLO_OFFLINE', 'YOLO_AUTOINSTALL', 'YOLO_CONFIG_DIR')}"
        " | {'online': u.ONLINE, 'calls': len(calls), 'config': str(u.USER_CONFIG_DIR)}))\n")
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_") and k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(home)  # Ultralytics' per-user folder on Linux: ~/.config/Ultralytics
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    info = json.loads(out)
    assert info["YOLO_OFFLINE"] == "1" and info["YOLO_AUTOINSTALL"] == "0" and info["YOLO_CONFIG_DIR"] is None
    assert Path(info["config"]).is_relative_to(home) and Path(info["config"]).name == "Ultralytics"
    assert list(work.iterdir()) == []
    assert info["online"] is False and info["calls"] == 0
    assert all((Path(info["config"]) / f).is_file() for f in ("Arial.ttf", "Arial.Unicode.ttf"))


def _coco_with_gaps(scenes, tmp_path):
    """The scenes' val split with category ids 10 * k and one crowd object."""
    gt = json.loads((scenes / "annotations" / "instances_val.json").read_text())
    for ann in gt["annotations"]:
        ann["category_id"] *= 10
    gt["annotations"][0]["iscrowd"] = 1
    for cat in gt["categories"]:
        cat["id"] *= 10
    path = tmp_path / "gaps.json"
    path.write_text(json.dumps(gt))
    return path, gt


def test_data_yolo_round_trip(scenes, tmp_path):
    out = tmp_path / "yolo"
    assert cli_main(["data", "yolo", "--out", str(out), "--scenes", str(scenes)]) == 0
    for split in ("train", "val"):
        source = json.loads((scenes / "annotations" / f"instances_{split}.json").read_text())
        written = json.loads((out / f"{split}.json").read_text())
        assert [c["id"] for c in written["categories"]] == [c["id"] for c in source["categories"]]
        for image in source["images"]:
            anns = [a for a in source["annotations"] if a["image_id"] == image["id"]]
            assert (out / "images" / split / f"{image['id']}.png").is_file()
            classes, boxes = read_yolo_labels(out / "labels" / split / f"{image['id']}.txt", image["width"],
                                              image["height"])
            assert classes == [a["category_id"] - 1 for a in anns]
            expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
            assert torch.allclose(torch.tensor(boxes, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), atol=1e-3)
        assert len(written["annotations"]) == len(source["annotations"])
    import yaml

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["nc"] == 10 and data["names"][0] == "T-shirt/top" and data["val"] == "images/val"
    # a COCO source with other category ids: renumbered 1..K (= class index + 1); crowd objects not trained on
    ann, gt = _coco_with_gaps(scenes, tmp_path)
    out2 = tmp_path / "yolo2"
    assert cli_main(["data", "yolo", "--out", str(out2), "--coco-val", str(scenes / "val"), str(ann)]) == 0
    written = json.loads((out2 / "val.json").read_text())
    assert [(c["id"], c["source_id"]) for c in written["categories"]] == [(k, 10 * k) for k in range(1, 11)]
    first = gt["annotations"][0]
    classes, _ = read_yolo_labels(out2 / "labels" / "val" / f"{first['image_id']}.txt", 128, 128)
    n_first = sum(a["image_id"] == first["image_id"] for a in gt["annotations"])
    assert len(classes) == n_first - 1
    assert [a["iscrowd"] for a in written["annotations"]].count(1) == 1
    assert yaml.safe_load((out2 / "data.yaml").read_text())["train"] == "images/val"


def _ultralytics_predictions(gt, jitter=2.0, seed=0):
    """Detections as Ultralytics' pred_to_json writes them: image_id = int(stem), category_id = class + 1, file_name."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for ann in gt["annotations"]:
        x, y, w, h = (torch.tensor(ann["bbox"]) + jitter * torch.randn(4, generator=gen)).tolist()
        out.append({"image_id": ann["image_id"], "file_name": f"{ann['image_id']}.png",
                    "category_id": ann["category_id"], "bbox": [round(v, 3) for v in (x, y, abs(w), abs(h))],
                    "score": round(float(torch.rand(1, generator=gen)), 5)})
    return out


def test_consistency_reads_yolo_predictions(scenes, tmp_path):
    out = tmp_path / "yolo"
    cli_main(["data", "yolo", "--out", str(out), "--scenes", str(scenes)])
    gt = json.loads((out / "val.json").read_text())
    (tmp_path / "predictions.json").write_text(json.dumps(_ultralytics_predictions(gt)))
    assert cli_main(["consistency", "--gt", str(out / "val.json"), "--dt", str(tmp_path / "predictions.json"),
                     "--out", str(tmp_path / "cons")]) == 0
    report = json.loads((tmp_path / "cons" / "consistency.json").read_text())["predictions"]
    assert report["num_detections"] == len(gt["annotations"])


class _NetworkAudit:
    """Records (and refuses) every socket connection, DNS lookup and pip subprocess."""

    def __init__(self, monkeypatch):
        self.calls = []
        for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                            (socket, "getaddrinfo")):
            monkeypatch.setattr(owner, name, self._deny(name))
        popen = subprocess.Popen
        audit = self

        class AuditedPopen(popen):
            def __init__(self, args, *a, **k):
                text = " ".join(map(str, args)) if isinstance(args, (list, tuple)) else str(args)
                if "pip" in text.split() or "-m pip" in text or "curl" in text or "wget" in text:
                    audit.calls.append(("subprocess", text))
                    raise OSError(f"refused in the test: {text}")
                super().__init__(args, *a, **k)

        monkeypatch.setattr(subprocess, "Popen", AuditedPopen)

    def _deny(self, name):
        def deny(*args, **kwargs):
            self.calls.append((name, repr(args[:2])))
            raise OSError(f"network refused in the test: {name}")
        return deny


class _Interrupt(Exception):
    pass


@pytest.mark.slow
def test_train_offline_resume_and_plain_checkpoint(scenes, tmp_path, monkeypatch):
    """One epoch of YOLOv8n (random init, 64 px) offline; resume keeps the harmonic loss; the checkpoint is plain."""
    from ultralytics import YOLO

    torch.set_num_threads(1)
    audit = _NetworkAudit(monkeypatch)
    data = tmp_path / "yolo"
    cli_main(["data", "yolo", "--out", str(data), "--scenes", str(scenes)])
    trainer = HarmonicDetectionTrainer.with_options("harmonicdet")
    seen = []

    def stop_after_first_epoch(tr):
        if tr.epoch == 0:
            raise _Interrupt

    def record(tr):
        crit = tr.model.criterion
        seen.append((type(crit).__name__, getattr(crit, "options", None), tr.epoch))

    common = dict(imgsz=64, batch=8, workers=0, device="cpu", project=str(tmp_path / "runs"), name="h",
                  exist_ok=True, plots=False, verbose=False, amp=False, seed=0)
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", stop_after_first_epoch)
    model.add_callback("on_train_batch_end", record)
    with pytest.raises(_Interrupt):
        model.train(data=str(data / "data.yaml"), trainer=trainer, epochs=2, **common)
    last = tmp_path / "runs" / "h" / "weights" / "last.pt"
    assert last.is_file() and seen and all(s[:2] == ("HarmonicDetectionLoss", loss_options("harmonicdet"))
                                           for s in seen)
    results = (tmp_path / "runs" / "h" / "results.csv").read_text().splitlines()[0].split(",")
    assert [c for c in results if c.startswith("train/")] == ["train/box_loss", "train/cls_loss", "train/dfl_loss"]
    terms = (tmp_path / "runs" / "h" / "harmonicdet_loss.csv").read_text().splitlines()[0].split(",")
    assert {"hiou_loss", "tc_loss", "stock_box_loss", "beta_c", "reversed_frac"} <= set(terms)
    # a trainer with other explicit options is refused; the plain trainer restores the checkpoint's loss
    with pytest.raises(ValueError, match="trained with"):
        YOLO(str(last)).train(resume=True, trainer=HarmonicDetectionTrainer.with_options("harmonic"))
    seen.clear()
    resumed = YOLO(str(last))
    resumed.add_callback("on_train_batch_end", record)
    resumed.train(resume=True, trainer=HarmonicDetectionTrainer)
    assert seen and all(s == ("HarmonicDetectionLoss", loss_options("harmonicdet"), 1) for s in seen)
    # predictions.json of val(save_json=True) is read by `harmonicdet consistency` as it is
    metrics = YOLO(str(last)).val(data=str(data / "data.yaml"), save_json=True, imgsz=64, batch=8, workers=0,
                                  device="cpu", project=str(tmp_path / "runs"), name="v", exist_ok=True, plots=False,
                                  verbose=False, conf=0.0001)
    predictions = Path(metrics.save_dir) / "predictions.json"
    assert predictions.is_file()
    assert cli_main(["consistency", "--gt", str(data / "val.json"), "--dt", str(predictions),
                     "--out", str(tmp_path / "cons")]) == 0
    assert audit.calls == []
    # the checkpoint loads in a process that never imports harmonicdet
    code = ("import sys, torch\n"
            "from ultralytics import YOLO\n"
            f"m = YOLO({str(last)!r})\n"
            "assert type(m.model).__module__ == 'ultralytics.nn.tasks' and type(m.model).__name__ == 'DetectionModel'\n"
            "m.model.eval(); m.model(torch.zeros(1, 3, 64, 64))\n"
            "assert not any(k.startswith('harmonicdet') for k in sys.modules), 'harmonicdet was imported'\n"
            "print('loaded', m.model.harmonicdet_loss)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded {'loss': 'harmonicdet'}" in done.stdout


@pytest.mark.parametrize("detach", [False, "beta_r"])
def test_reversed_frac_is_the_hand_count_of_negative_box_factors(detach):
    """``reversed_frac``: the share of foreground anchors whose Eq. S-5 factor 1 + beta_c + beta_r log beta_c < 0."""
    from ultralytics.utils.tal import bbox2dist

    criterion = build_criterion(_model("yolov8n.yaml", nc=3), loss_options("harmonic", detach_factors=detach))
    torch.manual_seed(3)
    pred_distri = torch.randn(1, 6, 4 * criterion.reg_max)
    ap, st, tb, ts, fg, _ = _fixed_assignment(criterion, pred_distri)
    fg[:] = True
    ts[0, :, 1] = 0.6
    # anchors 0-2: a sharp DFL at the target's distances (a good box); 3-5: random boxes
    bins = bbox2dist(ap, tb, criterion.reg_max - 1)[0, :3].round().long()
    pred_distri[0, :3] = 12.0 * F.one_hot(bins, criterion.reg_max).float().view(3, -1)
    pb = criterion.bbox_decode(ap, pred_distri)
    logits = torch.full((1, 6, 3), -4.0)
    logits[0, [0, 3], 1] = torch.tensor([-6.0, 3.0])  # low p with a good box: the reversal's corner
    terms = criterion.anchor_terms(logits, pred_distri, pb, ap, st, torch.tensor([64.0, 64.0]), ts.argmax(-1), tb,
                                   ts, fg)
    criterion.harmonic_loss(terms, ts.sum().clamp(min=1))
    anchors = criterion.last_anchors
    beta_c, beta_r = anchors["beta_c"].double(), anchors["beta_r"].double()
    hand = float(((1 + beta_c + beta_r * beta_c.log()) < 0).double().mean())
    assert 0 < hand < 1  # the crafted batch has reversed and not reversed anchors
    expected = 0.0 if detach == "beta_r" else hand  # beta_r detached: (1 + beta_c) dL/dt, never reversed
    assert float(criterion.last_stats["reversed_frac"]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_yolo_study_records_resumes_and_reports(tmp_path, monkeypatch, capsys):
    """`harmonicdet yolo-study`: an interrupted run resumes with each evaluation once, the records alone report."""
    from harmonicdet.apps.yolo_study import RunLogger

    torch.set_num_threads(1)
    audit = _NetworkAudit(monkeypatch)
    out, runs = tmp_path / "report", tmp_path / "runs"
    argv = ["yolo-study", "--out", str(out), "--runs", str(runs), "--data", str(tmp_path / "data"), "--epochs", "2",
            "--eval-every", "1", "--train-images", "16", "--val-images", "8", "--imgsz", "64", "--batch", "8",
            "--bootstrap", "20", "--threads", "2"]
    original, original_epoch_end = RunLogger.on_fit_epoch_end, RunLogger.on_train_epoch_end
    threads = []  # torch's thread count in each epoch: --threads, not Ultralytics' CPU count - 1

    def count_threads(self, trainer):
        threads.append(torch.get_num_threads())
        original_epoch_end(self, trainer)

    def interrupt_after_first_epoch(self, trainer):  # after its validation and last.pt, like a kill then
        original(self, trainer)
        if trainer.epoch == 0:
            raise _Interrupt

    monkeypatch.setattr(RunLogger, "on_fit_epoch_end", interrupt_after_first_epoch)
    monkeypatch.setattr(RunLogger, "on_train_epoch_end", count_threads)
    with pytest.raises(_Interrupt):
        cli_main(argv)
    monkeypatch.setattr(RunLogger, "on_fit_epoch_end", original)
    capsys.readouterr()
    assert cli_main(argv + ["--no-report"]) == 0  # as one lane of scripts/yolo_study_lanes.sh
    assert "yolov8n-standard-s0: resuming" in capsys.readouterr().out
    assert audit.calls == []
    assert threads == [2] * 4  # standard's epochs 1 and 2 (resumed), harmonic's 1 and 2
    assert not (out / "summary.json").exists() and (out / "runs" / "yolov8n-harmonic-s0" / "eval.json").is_file()
    assert cli_main(argv) == 0  # the report from the records: nothing trains
    assert capsys.readouterr().out.count("finished, skipped") == 2

    summary = json.loads((out / "summary.json").read_text())
    records = {r["name"]: r for r in summary["runs"]}
    assert set(records) == {"yolov8n-standard-s0", "yolov8n-harmonic-s0"}
    for name, record in records.items():
        folder = out / "runs" / name
        assert record["dir"] == str(folder) and (folder / "metrics.jsonl.gz").is_file()
        assert [h["iteration"] for h in record["history"]] == [2, 4], name  # 2 batches an epoch, each epoch once
        assert record["iterations"] == 4
        evaluated = json.loads((folder / "eval.json").read_text())
        assert record["metrics"] == evaluated["metrics"] and set(record["metrics"]) >= {"AP", "AP75"}
        sittings = json.loads((folder / "provenance.json").read_text())["sittings"]
        assert [s["start_iteration"] for s in sittings] == ([0, 2] if "standard" in name else [0])
        # training time sums the epochs of every sitting, the interrupted one's first epoch included
        epochs = [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines()]
        assert [e["epoch"] for e in epochs] == [1, 2] and all(e["train_seconds"] > 0 for e in epochs)
        assert record["train_s"] == pytest.approx(sum(e["train_seconds"] for e in epochs))
    assert "reversed_frac" in records["yolov8n-harmonic-s0"]["late_stats"]
    assert "reversed_frac" not in records["yolov8n-standard-s0"]["late_stats"]  # Ultralytics' own loss
    groups = {g["variant"]: g for g in summary["groups"]}
    expected = records["yolov8n-harmonic-s0"]["metrics"]["AP"] - records["yolov8n-standard-s0"]["metrics"]["AP"]
    assert groups["harmonic"]["delta"]["AP"]["mean"] == pytest.approx(expected)
    assert groups["harmonic"]["bootstrap"]["AP"]["delta"] == pytest.approx(expected, abs=1e-9)
    assert groups["standard"]["convergence"]["iterations"] == [2, 4]
    factors = json.loads((out / "runs" / "yolov8n-harmonic-s0" / "factors.json").read_text())
    assert [e["epoch"] for e in factors["epochs"]] == [1, 2] and factors["measurement"]["num_anchors"] > 0
    assert "| yolov8n-harmonic-s0 | 2 |" in (out / "factors.md").read_text()
    for name in records:  # the final weights' overlap with TAL's target, standard's with harmonicdet's weights
        overlap = json.loads((out / "runs" / name / "overlap.json").read_text())
        assert overlap["images"] == 16 and overlap["num_anchors"] > 0  # every training image (up to 512)
        assert overlap["options"]["tc_margin"] == (0.2 if "standard" in name else None)
    assert "1 + beta_r (cls) vs t" in (out / "factors.md").read_text()

    # a later sitting has the records, not the run folders: nothing trains, the report is the same
    shutil.rmtree(runs)
    capsys.readouterr()
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 2
    assert json.loads((out / "summary.json").read_text())["groups"] == summary["groups"]
    # --report-only: a variant not yet recorded is left out of the report, nothing trains, --runs is not made
    shutil.rmtree(runs)
    assert cli_main(argv + ["--report-only", "--variants", "standard", "harmonic", "harmonic_iou"]) == 0
    assert "2/3 runs recorded" in capsys.readouterr().out and not runs.exists()
    assert json.loads((out / "summary.json").read_text())["groups"] == summary["groups"]
    # a call training one variant (a lane) reports the whole study: the other records, the baseline first
    assert cli_main(argv + ["--report-only", "--variants", "harmonic"]) == 0
    assert "2/2 runs recorded" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["groups"] == summary["groups"]
    # a record made with other settings is refused by name, not mixed into the report
    odd = out / "runs" / "yolov8n-harmonic_iou-s0"
    shutil.copytree(out / "runs" / "yolov8n-harmonic-s0", odd)
    settings = yaml.safe_load((odd / "config.yaml").read_text())
    (odd / "config.yaml").write_text(yaml.safe_dump(settings | {"variant": "harmonic_iou", "epochs": 3}))
    assert cli_main(argv + ["--report-only", "--variants", "harmonic"]) == 2
    assert f"{odd / 'config.yaml'}: recorded with other settings" in capsys.readouterr().err
    shutil.rmtree(odd)
    # other settings than a record's are refused before anything trains
    assert cli_main(argv + ["--epochs", "3"]) == 2
