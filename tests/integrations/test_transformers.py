"""The Harmonic loss in transformers' RT-DETR / D-FINE (harmonicdet.integrations.transformers): the stock loss kept
exactly with the coupling off, Eq. S-1 per matched query against a hand-written reference, the coupling, degenerate
batches, training offline (a plain loop and transformers' Trainer), checkpoints that load without harmonicdet, and
the COCO results; the study is tests/apps/test_detr_study.py."""

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("transformers")  # the `transformers` extra; CI installs it (scripts/setup.sh --test)

import torch  # noqa: E402
from torchvision.ops import box_convert, box_iou, generalized_box_iou  # noqa: E402
from transformers.loss.loss_d_fine import DFineForObjectDetectionLoss  # noqa: E402
from transformers.loss.loss_rt_detr import RTDetrForObjectDetectionLoss, RTDetrLoss  # noqa: E402

from harmonicdet.integrations.transformers import (  # noqa: E402
    HarmonicLossFunction,
    HarmonicRTDetrLoss,
    harmonic_loss_function,
    loss_options,
)
from harmonicdet.integrations.transformers.evaluation import coco_results, detr_labels  # noqa: E402
from harmonicdet.integrations.transformers.models import build_detr, detr_config  # noqa: E402
from harmonicdet.losses import DETACH_MODES  # noqa: E402

STOCK = {"rt_detr": RTDetrForObjectDetectionLoss, "rt_detr_v2": RTDetrForObjectDetectionLoss,
         "d_fine": DFineForObjectDetectionLoss}


def _batch(empty=(False, False)):
    torch.manual_seed(5)
    images = torch.rand(2, 3, 64, 64)
    labels = [{"class_labels": torch.tensor([1, 3]),
               "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
              {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    for i, is_empty in enumerate(empty):
        if is_empty:
            labels[i] = {"class_labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    return images, labels


def _loss_and_grads(model, loss_function, images, labels):
    model.loss_function = loss_function
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the denoising queries are drawn in the forward
    out = model(pixel_values=images, labels=labels)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["rt_detr", "rt_detr_v2", "d_fine"])
def test_standard_is_the_stock_loss_exactly(arch):
    """Preset standard: the same loss dict (keys, values) and the same gradients, to the bit, as the stock function."""
    torch.manual_seed(0)
    model = build_detr(arch, "tiny", num_labels=4).train()
    images, labels = _batch()
    stock, stock_grads = _loss_and_grads(model, STOCK[arch], images, labels)
    ours, our_grads = _loss_and_grads(model, harmonic_loss_function(arch, "standard"), images, labels)
    assert list(ours.loss_dict) == list(stock.loss_dict) and any(k.endswith("_dn_0") for k in stock.loss_dict)
    assert all(torch.equal(ours.loss_dict[k], stock.loss_dict[k]) for k in stock.loss_dict)
    assert torch.equal(ours.loss, stock.loss)
    assert our_grads.keys() == stock_grads.keys() and all(torch.equal(our_grads[k], stock_grads[k]) for k in our_grads)


def _outputs(dtype=torch.float32):
    """Two images, 4 queries, 3 classes: random logits and boxes (cx, cy, w, h) that require gradients."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, generator=generator, dtype=dtype).requires_grad_()
    centres = 0.3 + 0.4 * torch.rand(2, 4, 2, generator=generator, dtype=dtype)
    sizes = 0.1 + 0.3 * torch.rand(2, 4, 2, generator=generator, dtype=dtype)
    boxes = torch.cat([centres, sizes], -1).requires_grad_()
    targets = [{"class_labels": torch.tensor([0, 2]),
                "boxes": torch.tensor([[0.4, 0.5, 0.3, 0.2], [0.6, 0.4, 0.2, 0.3]], dtype=dtype)},
               {"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.25, 0.25]], dtype=dtype)}]
    return logits, boxes, targets


def _reference(logits, boxes, targets, indices, preset, detach_factors):
    """Eq. S-1's extra terms per matched query written out with autograd: the harmonic total minus the stock total."""
    b = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    q = torch.cat([src for src, _ in indices])
    gt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
    gt_classes = torch.cat([t["class_labels"][j] for t, (_, j) in zip(targets, indices)])
    pred = box_convert(boxes[b, q], "cxcywh", "xyxy")
    gt = box_convert(gt_boxes, "cxcywh", "xyxy")
    iou = torch.diag(box_iou(pred, gt))
    t = iou.detach()
    p = torch.sigmoid(logits[b, q, gt_classes])
    kl = t * torch.log(t / p) + (1 - t) * torch.log((1 - t) / (1 - p))
    weights = {"loss_bbox": 5.0, "loss_giou": 2.0}
    parts = {"loss_bbox": (boxes[b, q] - gt_boxes).abs().sum(-1),
             "loss_giou": 1 - torch.diag(generalized_box_iou(pred, gt))}
    if preset != "harmonic":
        weights["loss_hiou"] = 1.5 * 2.0
        parts["loss_hiou"] = (1 + iou) ** 0.8 * (1 - iou)
    loc = sum(weights[k] * parts[k] for k in parts) / sum(weights.values())
    beta_c, beta_r = torch.exp(-kl), torch.exp(-loc)
    if detach_factors in (True, "beta_c"):
        beta_c = beta_c.detach()
    if detach_factors in (True, "beta_r"):
        beta_r = beta_r.detach()
    num_boxes = 3
    keys = {k: weights[k] * ((1 + beta_c) * parts[k]).sum() / num_boxes for k in parts}
    extra = (t * beta_r * kl).sum() / num_boxes
    if preset == "harmonicdet":
        probs = torch.sigmoid(logits[b, q])
        share = probs / probs.sum(1, keepdim=True)
        entropy = -(share * share.log()).sum(1).detach()
        keys["loss_tc"] = ((p - iou).abs() - 0.2).clamp(min=0).div(1 + entropy.exp()).sum() / num_boxes
    with torch.no_grad():
        stats = {"beta_c": float(beta_c.mean()), "beta_r": float(beta_r.mean()), "target": float(t.mean()),
                 "reversed_frac": float((1 + beta_c + beta_r * beta_c.log() < 0).double().mean())}
    return extra, keys, stats


@pytest.mark.parametrize("preset", ["harmonic", "harmonic_iou", "harmonicdet"])
@pytest.mark.parametrize("detach_factors", DETACH_MODES)
def test_matched_queries_follow_eq_s1(preset, detach_factors):
    """Against the reference: loss_vfl = stock + sum t beta_r KL / num_boxes, each box key (1 + beta_c) times its part,
    HIoU and TC as the presets add them; gradients (closed form, each detach mode) equal autograd's."""
    config = detr_config("rt_detr", "tiny", num_labels=3)
    options = loss_options(preset, detach_factors=detach_factors)
    logits, boxes, targets = _outputs(torch.float64)
    outputs = {"logits": logits, "pred_boxes": boxes}
    ours = HarmonicRTDetrLoss(config, options)
    got = ours(outputs, targets)
    stock = RTDetrLoss(config)(outputs, targets)
    indices = ours.matcher(outputs, targets)
    extra, keys, stats = _reference(logits, boxes, targets, indices, preset, detach_factors)
    assert set(got) == {"loss_vfl", *keys}
    torch.testing.assert_close(got["loss_vfl"], stock["loss_vfl"] + extra)
    for key, value in keys.items():
        torch.testing.assert_close(got[key], value)
    record = ours.group_records[0]
    assert float(record["beta_c"].mean()) == pytest.approx(stats["beta_c"], rel=1e-6)
    assert float(record["beta_r"].mean()) == pytest.approx(stats["beta_r"], rel=1e-6)
    assert float(record["target"].mean()) == pytest.approx(stats["target"], rel=1e-6)
    expected_reversed = 0.0 if detach_factors in (True, "beta_r") else stats["reversed_frac"]
    assert float(record["reversed_frac"]) == pytest.approx(expected_reversed)
    grads = torch.autograd.grad(sum(got.values()), (logits, boxes))
    reference_total = sum(stock.values()) - stock["loss_bbox"] - stock["loss_giou"] + extra + sum(keys.values())
    for mine, reference in zip(grads, torch.autograd.grad(reference_total, (logits, boxes))):
        torch.testing.assert_close(mine, reference)


@pytest.mark.parametrize("detach_factors", DETACH_MODES)
def test_classification_gradient_follows_box_quality(detach_factors):
    """One query matched to one object; two boxes with the same IoU (0.6) and GIoU but different L1: the stock VFL
    (whose target is the IoU) gives the class logit the same gradient, the harmonic loss different ones."""
    config = detr_config("rt_detr", "tiny", num_labels=3)
    targets = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)}]
    shifted = torch.tensor([[[0.55, 0.5, 0.2, 0.2]]], dtype=torch.float64)  # L1 0.05
    shrunk = torch.tensor([[[0.5, 0.5, 0.2, 0.12]]], dtype=torch.float64)  # L1 0.08
    criteria = {"stock": RTDetrLoss(config),
                "harmonic": HarmonicRTDetrLoss(config, loss_options("harmonic", detach_factors=detach_factors))}
    grads = {}
    for name, criterion in criteria.items():
        for box_name, box in (("shifted", shifted), ("shrunk", shrunk)):
            logits = torch.tensor([[[-1.0, 0.0, -2.0]]], dtype=torch.float64, requires_grad=True)
            losses = criterion({"logits": logits, "pred_boxes": box}, targets)
            grads[name, box_name] = torch.autograd.grad(sum(losses.values()), logits)[0][0, 0, 1]
    assert abs(float(grads["stock", "shifted"] - grads["stock", "shrunk"])) < 1e-12
    assert abs(float(grads["harmonic", "shifted"] - grads["harmonic", "shrunk"])) > 5e-4


@pytest.mark.parametrize("arch", ["rt_detr", "d_fine"])
@pytest.mark.parametrize("empty", [(True, True), (True, False)])
def test_empty_targets_give_finite_loss_and_gradients(arch, empty):
    """Images without objects (all of them: no matched query at all): finite loss and gradients, as the stock loss."""
    torch.manual_seed(0)
    model = build_detr(arch, "tiny", num_labels=4).train()
    images, labels = _batch(empty)
    loss_function = harmonic_loss_function(arch, "harmonicdet")
    out, grads = _loss_and_grads(model, loss_function, images, labels)
    assert torch.isfinite(out.loss) and all(torch.isfinite(v).all() for v in out.loss_dict.values())
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert loss_function.last_stats["num_matched"] == (0 if all(empty) else 1)


def test_options_are_validated_once_at_the_boundary():
    assert loss_options("standard") is None
    options = loss_options("harmonicdet", detach_factors="beta_r")
    assert (options.alpha, options.gamma, options.tc_margin, options.detach_factors) == (1.5, 0.8, 0.2, "beta_r")
    assert HarmonicLossFunction("d_fine", options).options is options
    with pytest.raises(ValueError, match="preset must be one of"):
        loss_options("qfl")
    with pytest.raises(ValueError, match="box_loss"):
        harmonic_loss_function("rt_detr", "harmonic", box_loss="l1")
    with pytest.raises(ValueError, match="detach_factors"):
        loss_options("harmonic", detach_factors="both")
    with pytest.raises(ValueError, match="arch must be one of"):
        harmonic_loss_function("detr")
    with pytest.raises(ValueError, match="options must be a HarmonicOptions"):
        HarmonicLossFunction("rt_detr", {"alpha": 1.0})
    model = build_detr("d_fine", "tiny", num_labels=4).train()
    model.loss_function = harmonic_loss_function("rt_detr")
    with pytest.raises(ValueError, match="for arch 'rt_detr', but the model is 'd_fine'"):
        model(pixel_values=_batch()[0], labels=_batch()[1])


@pytest.mark.slow  # the subprocess imports torch and transformers afresh
def test_one_training_step_offline_and_the_checkpoint_loads_without_harmonicdet(no_network, tmp_path):
    """A plain loop's step with sockets refused changes the weights; save_pretrained's folder loads in a process that
    never imports harmonicdet, with the same outputs."""
    torch.manual_seed(0)
    model = build_detr("rt_detr", "tiny", num_labels=4).train()
    loss_function = harmonic_loss_function("rt_detr", preset="harmonicdet")
    model.loss_function = loss_function
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = _batch()
    loss = model(pixel_values=images, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    assert {"beta_c", "beta_r", "reversed_frac", "reversed_frac_all"} <= set(loss_function.last_stats)
    assert loss_function.last_stats["num_matched"] == 3
    model.eval()
    model.save_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(pixel_values=images[:1]).logits
    torch.save({"images": images[:1], "logits": expected}, tmp_path / "expected.pt")
    assert no_network == []
    code = (
        "import socket, sys, torch\n"
        "def deny(*a, **k): raise OSError('denied')\n"
        "socket.getaddrinfo = socket.create_connection = socket.socket.connect = deny\n"
        "from transformers import RTDetrForObjectDetection\n"
        f"model = RTDetrForObjectDetection.from_pretrained({str(tmp_path / 'model')!r}).eval()\n"
        f"expected = torch.load({str(tmp_path / 'expected.pt')!r})\n"
        "with torch.no_grad():\n"
        "    logits = model(pixel_values=expected['images']).logits\n"
        "print(torch.equal(logits, expected['logits']), any(m.startswith('harmonicdet') for m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.stdout.split()[-2:] == ["True", "False"]


def test_trainer_trains_with_the_harmonic_loss(no_network, tmp_path):
    """transformers' Trainer (accelerate, CPU) takes the model's loss: two steps with the harmonic loss function."""
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = build_detr("rt_detr", "tiny", num_labels=4)
    loss_function = harmonic_loss_function("rt_detr", preset="harmonic")
    model.loss_function = loss_function
    images, labels = _batch()
    examples = [{"pixel_values": images[i], "labels": labels[i]} for i in range(2)]
    arguments = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                                  report_to=[], save_strategy="no", use_cpu=True, logging_steps=1,
                                  remove_unused_columns=False, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=arguments, train_dataset=examples,
                      data_collator=lambda items: {"pixel_values": torch.stack([x["pixel_values"] for x in items]),
                                                   "labels": [x["labels"] for x in items]})
    result = trainer.train()
    assert result.global_step == 2 and math.isfinite(result.training_loss)
    assert loss_function.last_stats["num_matched"] == 3 and no_network == []


def test_detr_labels_and_coco_results_by_hand():
    """Dataset targets to transformers' labels; outputs to COCO records through transformers' post-processing."""
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 50.0, 40.0]]), "labels": torch.tensor([3])}]
    labels = detr_labels(targets, [(100, 200)])
    assert labels[0]["class_labels"].tolist() == [2]
    torch.testing.assert_close(labels[0]["boxes"], torch.tensor([[0.15, 0.3, 0.2, 0.2]]))

    class Outputs:
        logits = torch.tensor([[[2.0, -8.0], [-8.0, 0.0]]])  # query 0: class 0; query 1: class 1
        pred_boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]]])

    records = coco_results(Outputs(), [7], [(100, 200)], {1: 11, 2: 22}, threshold=0.01)
    assert [(r["category_id"], r["score"]) for r in records] == [(11, round(1 / (1 + math.exp(-2)), 5)), (22, 0.5)]
    assert records[0]["image_id"] == 7 and records[0]["bbox"] == [80.0, 30.0, 40.0, 40.0]
    assert records[1]["bbox"] == [40.0, 20.0, 20.0, 10.0]
    json.dumps(records)
