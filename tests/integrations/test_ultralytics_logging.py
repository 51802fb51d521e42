"""What an Ultralytics run logs about its loss: results.csv's columns, harmonicdet_loss.csv/.yaml, stock resumes."""

import csv
import io
import socket

import pytest

pytest.importorskip("ultralytics")

import torch  # noqa: E402
import yaml  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

from harmonicdet.integrations.ultralytics import (  # noqa: E402
    HarmonicDetectionModel,
    HarmonicDetectionTrainer,
    epochs_without_harmonic_loss,
)
from harmonicdet.integrations.ultralytics.run_log import (  # noqa: E402
    EPOCH_FILE,
    LOSS_FILE,
    EpochLossLog,
    stated_loss,
    write_loss_statement,
)

STOCK = ("box_loss", "cls_loss", "dfl_loss")
PRESETS = [("standard", {}), ("harmonic", {}), ("harmonic_iou", {}), ("harmonicdet", {}),
           ("harmonicdet", {"detach_factors": "beta_r"}), ("harmonicdet", {"beta_c_mode": "prob"}),
           ("harmonicdet", {"box_loss": "none"}), ("harmonicdet", {"box_loss": "none", "alpha": 1.0})]


def _model(cfg, preset, options, split_items=False):
    torch.manual_seed(0)
    model = HarmonicDetectionModel(cfg, nc=3, verbose=False, loss={"loss": preset, **options},
                                   split_items=split_items)
    model.args = get_cfg()
    return model.train()


def _batch():
    torch.manual_seed(1)
    boxes = torch.tensor([[0.3, 0.3, 0.3, 0.4], [0.7, 0.6, 0.2, 0.3], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.52, 0.5]])
    return {"img": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0.0, 0.0, 1.0, 1.0]),
            "cls": torch.tensor([[0.0], [2.0], [1.0], [2.0]]), "bboxes": boxes}


def _step(model, batch):
    model.zero_grad()
    loss, items = model.loss(batch)
    loss.sum().backward()
    return loss.detach(), items, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def _loss_of_terms(criterion, images):
    """The loss vector the criterion returned, rebuilt from its branches' ``last_terms`` as Ultralytics combines
    them (YOLO26's ``E2ELoss``: one-to-many and one-to-one weighted)."""
    def vector(branch):
        return torch.stack([branch.last_terms[n] for n in branch.term_names]) * images

    if hasattr(criterion, "one2one"):
        return vector(criterion.one2many) * criterion.o2m + vector(criterion.one2one) * criterion.o2o
    return vector(criterion)


# every preset on YOLOv8; YOLO26's end-to-end criterion with a task-contrasting term that is not 0 on this batch
CASES = [("yolov8n.yaml", preset, options) for preset, options in PRESETS] + [
    ("yolo26n.yaml", "harmonicdet", {}), ("yolo26n.yaml", "harmonicdet", {"box_loss": "none"})]


@pytest.mark.parametrize("cfg,preset,options", CASES)
def test_items_are_ultralytics_columns_and_sum_to_the_loss(cfg, preset, options):
    """Every preset takes a finite step and logs Ultralytics' three items (hiou in box, tc in cls) summing to the
    terms back-propagated; the old split items (kept for runs begun with them) change the logged items only, never
    the loss or a gradient."""
    batch = _batch()
    model = _model(cfg, preset, options)
    loss, items, grads = _step(model, batch)
    assert torch.isfinite(loss).all() and grads and all(torch.isfinite(g).all() for g in grads)
    logged = getattr(model.criterion, "one2one", model.criterion)  # the branch whose items Ultralytics logs
    assert list(items) == list(logged.loss_names) and logged.loss_names[:2] == ("box_loss", "cls_loss")
    assert torch.equal(_loss_of_terms(model.criterion, 2), loss)
    torch.testing.assert_close(sum(items.values()), sum(logged.last_terms[n] for n in logged.term_names),
                               rtol=1e-6, atol=0)
    split = _model(cfg, preset, options, split_items=True)
    split_loss, split_items, split_grads = _step(split, batch)
    assert list(split_items) == list(logged.term_names)
    assert all(torch.equal(split_items[n], logged.last_terms[n]) for n in logged.term_names)
    assert torch.equal(split_loss, loss) and all(torch.equal(a, b) for a, b in zip(grads, split_grads))
    expected = dict(split_items)
    for term, into in (("hiou_loss", "box_loss"), ("tc_loss", "cls_loss")):
        if term in expected:
            expected[into] = expected[into] + expected.pop(term)
    assert all(torch.equal(items[k], expected[k]) for k in items)
    assert cfg == "yolov8n.yaml" or float(split_items["tc_loss"]) > 0
    if options.get("box_loss") == "none":  # no CIoU part: box_loss logs HIoU alone
        assert float(split_items["box_loss"]) == 0.0 and float(split_items["hiou_loss"]) > 0


@pytest.mark.parametrize("cfg,third", [("yolov8n.yaml", "dfl_loss"), ("yolo26n.yaml", "l1_loss")])
@pytest.mark.parametrize("preset", ["harmonicdet", "standard"])
def test_stock_terms_are_ultralytics_own_loss(cfg, third, preset):
    """``stock_*`` of ``last_terms`` are the terms Ultralytics' own criterion gives on the same predictions (YOLO26:
    its one-to-one branch, whose items Ultralytics logs)."""
    model = _model(cfg, preset, {})
    batch = _batch()
    preds = model(batch["img"])
    _, reference = DetectionModel.init_criterion(model)(preds, batch)
    criterion = model.init_criterion()
    criterion(preds, batch)
    terms = getattr(criterion, "one2one", criterion).last_terms
    assert list(reference) == ["box_loss", "cls_loss", third]
    for name, value in reference.items():
        torch.testing.assert_close(terms[f"stock_{name}"], value, rtol=1e-5, atol=1e-6)


def test_epoch_log_rows_are_batch_means(tmp_path):
    log = EpochLossLog(tmp_path)
    t = torch.tensor
    batches = [({"box_loss": t(1.0), "cls_loss": t(2.0), "dfl_loss": t(0.5), "hiou_loss": t(3.0),
                 "stock_box_loss": t(0.4), "stock_cls_loss": t(1.5), "stock_dfl_loss": t(0.3)},
                {"beta_c": t(0.2), "beta_r": t(0.6), "reversed_frac": t(0.0), "num_fg": t(9.0)}),
               ({"box_loss": t(3.0), "cls_loss": t(4.0), "dfl_loss": t(1.5), "hiou_loss": t(5.0),
                 "stock_box_loss": t(0.6), "stock_cls_loss": t(2.5), "stock_dfl_loss": t(0.5)},
                {"beta_c": t(0.4), "beta_r": t(0.8), "reversed_frac": t(0.5)})]
    log.start(0, resume=False)
    log.reset()
    for terms, stats in batches:
        log.add_batch(terms, stats)
    log.write(1)
    log.reset()
    log.add_batch(batches[0][0], {})  # as for ``standard``: no factors
    log.write(2)
    rows = list(csv.DictReader(io.StringIO((tmp_path / EPOCH_FILE).read_text())))
    assert list(rows[0]) == ["epoch", "loss", "box_loss", "cls_loss", "dfl_loss", "hiou_loss", "tc_loss",
                             "stock_box_loss", "stock_cls_loss", "stock_dfl_loss", "beta_c", "beta_r", "reversed_frac"]
    assert rows[0] == {"epoch": "1", "loss": "10", "box_loss": "2", "cls_loss": "3", "dfl_loss": "1", "hiou_loss": "4",
                       "tc_loss": "0", "stock_box_loss": "0.5", "stock_cls_loss": "2", "stock_dfl_loss": "0.4",
                       "beta_c": "0.3", "beta_r": "0.7", "reversed_frac": "0.25"}
    assert rows[1]["loss"] == "6.5" and rows[1]["beta_c"] == rows[1]["reversed_frac"] == ""
    log.start(1, resume=True)  # a resume from epoch 1's checkpoint keeps epoch 1 only
    assert [r["epoch"] for r in csv.DictReader(io.StringIO((tmp_path / EPOCH_FILE).read_text()))] == ["1"]
    log.start(0, resume=False)  # a new run in the same folder starts afresh
    assert not (tmp_path / EPOCH_FILE).exists()


def test_stock_epochs_are_those_of_results_csv_without_a_harmonic_row(tmp_path):
    (tmp_path / "results.csv").write_text("epoch,time,train/box_loss\n1,0.1,3\n2,0.1,2\n3,0.1,1\n4,0.1,1\n")
    (tmp_path / EPOCH_FILE).write_text("epoch,loss\n1,5\n4,2\n")
    assert epochs_without_harmonic_loss(tmp_path) == [2, 3]
    assert epochs_without_harmonic_loss(tmp_path, up_to=2) == [2]
    assert stated_loss(tmp_path) is None
    write_loss_statement(tmp_path, {"loss": "harmonicdet", "tc_margin": 0.3}, 0, resume=False)
    write_loss_statement(tmp_path, {"loss": "harmonicdet", "tc_margin": 0.3}, 3, resume=True, epochs_not_logged=[2, 3])
    statement = yaml.safe_load((tmp_path / LOSS_FILE).read_text())
    assert statement["loss"] == stated_loss(tmp_path) == {"loss": "harmonicdet", "tc_margin": 0.3}
    assert [(s["start_epoch"], s.get("epochs_not_logged")) for s in statement["sittings"]] == [(0, None), (3, [2, 3])]
    write_loss_statement(tmp_path, {"loss": "harmonic"}, 0, resume=False)  # a new run: one sitting
    assert len(yaml.safe_load((tmp_path / LOSS_FILE).read_text())["sittings"]) == 1


@pytest.fixture
def no_network(monkeypatch):
    def deny(*args, **kwargs):
        raise OSError("network refused in the test")

    for owner, name in ((socket.socket, "connect"), (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, name, deny)


class _Stop(Exception):
    pass


def _stop_at(epoch):
    def stop(trainer):
        if trainer.epoch == epoch:
            raise _Stop
    return stop


def _yolo_data(scenes, folder):
    from harmonicdet.cli import main

    assert main(["data", "yolo", "--out", str(folder), "--scenes", str(scenes)]) == 0
    return folder / "data.yaml"


def _rows(path):
    """Header and rows of a CSV as Python's csv module reads them (a short row stays short)."""
    header, *rows = list(csv.reader(io.StringIO(path.read_text())))
    return header, rows


def test_stock_resume_of_a_harmonic_run_keeps_results_csv_whole(scenes, tmp_path, no_network):
    """A harmonicdet run, resumed once the usual way (stock loss), then with the harmonic trainer: results.csv's rows
    all have its header's columns and read as Ultralytics reads them; the stock epoch is the one without a row in
    harmonicdet_loss.csv, and the harmonic resume records it."""
    import polars
    from ultralytics import YOLO

    torch.set_num_threads(1)
    data = _yolo_data(scenes, tmp_path / "yolo")
    common = dict(imgsz=64, batch=8, workers=0, device="cpu", project=str(tmp_path / "runs"), name="h",
                  exist_ok=True, plots=False, verbose=False, amp=False, seed=0)
    run = tmp_path / "runs" / "h"
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", _stop_at(0))
    with pytest.raises(_Stop):
        model.train(data=str(data), trainer=HarmonicDetectionTrainer.with_options("harmonicdet"), epochs=3, **common)
    stock = YOLO(str(run / "weights" / "last.pt"))
    stock.add_callback("on_model_save", _stop_at(1))
    with pytest.raises(_Stop):
        stock.train(resume=True)  # without trainer=: Ultralytics' DetectionTrainer and loss
    assert epochs_without_harmonic_loss(run) == [2]
    YOLO(str(run / "weights" / "last.pt")).train(resume=True, trainer=HarmonicDetectionTrainer)

    header, rows = _rows(run / "results.csv")
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(len(r) == len(header) for r in rows)
    table = polars.read_csv(run / "results.csv")
    assert table.columns == header and table["epoch"].to_list() == [1, 2, 3]
    assert [c for c in header if c.startswith(("train/", "val/"))] == [f"{s}/{n}" for s in ("train", "val")
                                                                         for n in STOCK]
    assert {"metrics/mAP50(B)", "metrics/mAP50-95(B)"} <= set(header)
    assert all(0 <= v <= 1 for v in table["metrics/mAP50-95(B)"].to_list())  # a metric, not a loss
    _, logged = _rows(run / EPOCH_FILE)
    assert [r[0] for r in logged] == ["1", "3"]
    statement = yaml.safe_load((run / LOSS_FILE).read_text())
    assert statement["loss"] == {"loss": "harmonicdet"}
    assert [(s["start_epoch"], s.get("epochs_not_logged")) for s in statement["sittings"]] == [(0, None), (2, [2])]
    # the harmonic epochs' results.csv items are harmonicdet_loss.csv's terms with hiou in box and tc in cls
    # (Ultralytics rounds results.csv's losses to 5 decimals: an absolute tolerance, whatever the losses' size)
    first = dict(zip(header, rows[0]))
    terms = next(csv.DictReader(io.StringIO((run / EPOCH_FILE).read_text())))
    assert float(first["train/box_loss"]) == pytest.approx(float(terms["box_loss"]) + float(terms["hiou_loss"]),
                                                           abs=1e-5)
    assert float(first["train/cls_loss"]) == pytest.approx(float(terms["cls_loss"]) + float(terms["tc_loss"]),
                                                           abs=1e-5)


def test_a_run_begun_with_split_columns_keeps_them(scenes, tmp_path, no_network):
    """A run whose results.csv has hiou_loss and tc_loss columns (as harmonicdet wrote them before) is resumed with
    those columns, so its new rows are as long as its header."""
    from ultralytics import YOLO

    torch.set_num_threads(1)
    data = _yolo_data(scenes, tmp_path / "yolo")
    run = tmp_path / "runs" / "old"
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", _stop_at(0))
    with pytest.raises(_Stop):
        model.train(data=str(data), trainer=HarmonicDetectionTrainer.with_options("harmonicdet"), epochs=2, imgsz=64,
                    batch=8, workers=0, device="cpu", project=str(tmp_path / "runs"), name="old", exist_ok=True,
                    plots=False, verbose=False, amp=False, seed=0)
    header, rows = _rows(run / "results.csv")  # rewritten as the old layout: the extra terms after dfl_loss
    old = []
    for column in header:
        old.append(column)
        if column.endswith("/dfl_loss"):
            old += [column.replace("dfl_loss", "hiou_loss"), column.replace("dfl_loss", "tc_loss")]
    old_rows = [[dict(zip(header, r)).get(c, "0") for c in old] for r in rows]
    (run / "results.csv").write_text("\n".join(",".join(r) for r in [old, *old_rows]) + "\n")
    YOLO(str(run / "weights" / "last.pt")).train(resume=True, trainer=HarmonicDetectionTrainer)
    header, rows = _rows(run / "results.csv")
    assert header == old and len(rows) == 2 and all(len(r) == len(header) for r in rows)
    assert float(dict(zip(header, rows[1]))["train/hiou_loss"]) > 0
