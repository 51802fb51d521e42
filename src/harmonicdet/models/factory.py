"""``build_detector``: torchvision detectors whose heads compute a chosen loss preset.

The returned model is always the torchvision class (``FasterRCNN``, ``MaskRCNN``,
``RetinaNet``, ``FCOS``, ``SSD``) or a subclass of it, with torchvision's ``forward``,
inference and NMS. For ``loss="standard"`` every part is torchvision's own class,
except FCOS's head: :class:`~harmonicdet.models.fcos.StandardFCOSHead` calls
torchvision's ``FCOSHead`` unchanged and only records the per-level positive counts.
The harmonic presets (and ``standard_posweight``, the same parts with constant
factors) swap in a subclass of the part that computes the training loss:

=============== ============================ ==========================================
arch            harmonic part                what Eq. S-1 harmonises per positive
=============== ============================ ==========================================
faster_rcnn,    ``HarmonicRoIHeads``         softmax CE of a sampled RoI, SmoothL1
mask_rcnn       (``model.roi_heads``)        (beta 1/9) of its class-specific offsets;
                                             RPN and mask losses are torchvision's
retinanet       ``HarmonicRetinaNetHead``    focal loss summed over classes, the head's
                                             box loss (L1 on the encoded offsets)
fcos            ``HarmonicFCOSHead``         focal loss summed over classes, GIoU
                                             (replaced by HIoU when ``alpha > 0``);
                                             centerness is torchvision's
ssd             ``HarmonicSSD`` (the model)  softmax CE, SmoothL1 (beta 1); hard
                                             negative mining is torchvision's
=============== ============================ ==========================================

Negatives keep their plain classification loss and every term keeps torchvision's
normaliser. With ``alpha > 0`` ``L_loc`` gains ``alpha * L_HIoU`` on the box decoded
with the model's own box coder; with a TC margin the loss dict gains
``"loss_task_contrast"`` (R-CNN) or ``"task_contrast"`` (one-stage detectors).

``qfl`` (FCOS, RetinaNet only) uses :class:`~harmonicdet.models.qfl.QFLRetinaNetHead`
in a ``RetinaNet``, and :class:`~harmonicdet.models.qfl.QFLFCOSHead` (no centerness
branch) in :class:`~harmonicdet.models.qfl.QFLFCOS` (scores ``sigmoid(cls)``); the loss
dict is ``{"classification", "bbox_regression"}``.

FCOS at small image sizes: torchvision's FCOS sizes its locations' anchors as the
strides (8 .. 128) and assigns a ground truth to level ``l`` when the largest
``ltrb`` distance lies in ``(4 size_l, 8 size_l)`` (level P3 from 0, P7 up to
infinity), so in 128 px images every object under ~128 px lands on P3.
``fcos_anchor_sizes`` sets those sizes, which torchvision also uses for the
centre-sampling radius (``center_sampling_radius * size``) and to normalise the box
coder; e.g. ``fcos_anchor_sizes=(2, 4, 8, 16, 32), center_sampling_radius=6.0``
(the same absolute sampling radius 12 px at P3 as the default 1.5 * 8) spreads
16-56 px objects over P3-P5.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet, ssdlite320_mobilenet_v3_large
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSD

from harmonicdet.checks import check_finite_number, is_finite_number, is_int
from harmonicdet.losses.options import QFLOptions

from .backbones import BACKBONES, fpn_backbone
from .fcos import HarmonicFCOSHead, StandardFCOSHead
from .presets import QFL_ARCHS, LossOptions, harmonic_options
from .pretrained import load_pretrained
from .qfl import QFLFCOS, QFLFCOSHead, QFLRetinaNetHead
from .rcnn import HarmonicRoIHeads
from .retinanet import HarmonicRetinaNetHead
from .ssd import HarmonicSSD

ARCHS = ("faster_rcnn", "mask_rcnn", "retinanet", "fcos", "ssd")
# FCOS's anchors are its locations; torchvision's sizes equal the levels' strides
FCOS_ANCHOR_SIZES = ((8,), (16,), (32,), (64,), (128,))
FCOS_CENTER_SAMPLING_RADIUS = 1.5  # torchvision's default


def _fcos_anchor_sizes(sizes: Optional[Sequence[float]]) -> Tuple[Tuple[float, ...], ...]:
    """``((s3,), ..., (s7,))`` for the five FCOS levels; torchvision's strides when ``sizes`` is ``None``."""
    if sizes is None:
        return FCOS_ANCHOR_SIZES
    values = list(sizes) if isinstance(sizes, (list, tuple)) else None
    if values is None or len(values) != 5 or any(not is_finite_number(v) or v <= 0 for v in values):
        raise ValueError(f"fcos_anchor_sizes must be 5 positive numbers (levels P3-P7), got {sizes!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"fcos_anchor_sizes must be strictly increasing from P3 to P7, got {sizes!r}")
    return tuple((v,) for v in values)


def _anchor_sizes(image_size: int, base: int) -> list:
    """torchvision's anchor sizes ``base * 2**level``, scaled down for images smaller than 512 px (>= 8 px)."""
    scale = min(1.0, image_size / 512)
    return [max(8, int(round(base * scale))) * 2**level for level in range(5)]


# constructor arguments build_detector sets itself (by name or through its own options)
_OWN_KWARGS = {"backbone", "num_classes", "anchor_generator", "rpn_anchor_generator", "head", "min_size", "max_size",
               "size", "center_sampling_radius", "image_mean", "image_std", "positive_fraction"}


def _detector_class(arch: str, qfl: bool) -> type:
    """The torchvision class (or harmonicdet subclass) ``build_detector`` returns for ``arch``."""
    return {"ssd": SSD, "fcos": QFLFCOS if qfl else FCOS, "retinanet": RetinaNet, "faster_rcnn": FasterRCNN,
            "mask_rcnn": MaskRCNN}[arch]


def _detector_kwargs(arch: str, qfl: bool, kwargs: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """``detector_kwargs`` checked against the torchvision class's constructor, naming a bad key."""
    if not kwargs:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"detector_kwargs must be a mapping, got {type(kwargs).__name__}")
    cls = _detector_class(arch, qfl)
    accepted = {name for cls_ in cls.__mro__ if cls_.__init__ is not object.__init__
                for name in inspect.signature(cls_.__init__).parameters} - {"self", "args", "kwargs"}
    for key in kwargs:
        if key in _OWN_KWARGS:
            raise ValueError(f"detector_kwargs: {key!r} is set by build_detector itself")
        if key not in accepted:
            raise ValueError(f"detector_kwargs: {cls.__name__} takes no argument {key!r} "
                             f"(valid: {', '.join(sorted(accepted - _OWN_KWARGS))})")
    return dict(kwargs)


def _head(options, classes: Tuple[type, type, type], *args: Any) -> nn.Module:
    """The (standard, harmonic, qfl) head class the preset's ``options`` call for, built with ``args``."""
    standard, harmonic, qfl = classes
    if options is None:
        return standard(*args)
    return (qfl if isinstance(options, QFLOptions) else harmonic)(*args, options=options)


def _check_arguments(arch: str, num_classes: int, backbone: Optional[str], image_size: int,
                     fpn_channels: Optional[int], fcos_anchor_sizes: Optional[Sequence[float]],
                     center_sampling_radius: Optional[float], qfl: bool) -> Tuple[str, Tuple, float]:
    """The checks of :func:`build_detector`'s arguments that do not depend on the loss options; returns the
    backbone, the FCOS anchor sizes and centre-sampling radius, defaults filled in."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if backbone is None:
        backbone = "mobilenet_v3_large" if arch == "ssd" else "resnet18"
    if backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    if arch == "ssd" and backbone != "mobilenet_v3_large":
        raise ValueError(f"arch 'ssd' is SSDlite with backbone 'mobilenet_v3_large', got backbone {backbone!r}")
    if arch == "ssd" and fpn_channels is not None:
        raise ValueError("arch 'ssd' (SSDlite) has no FPN: fpn_channels must not be given")
    if arch == "fcos" and fpn_channels is not None and (fpn_channels % 32 or fpn_channels < 64):
        # torchvision's FCOS head normalises with GroupNorm(32, channels); 32 channels fail on 1x1 levels
        raise ValueError(f"FCOS needs fpn_channels a multiple of 32 and >= 64 (GroupNorm(32)), got {fpn_channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if arch != "fcos" and (fcos_anchor_sizes is not None or center_sampling_radius is not None):
        raise ValueError(f"fcos_anchor_sizes and center_sampling_radius are options of arch 'fcos', not {arch!r}")
    fcos_sizes = _fcos_anchor_sizes(fcos_anchor_sizes)
    radius = FCOS_CENTER_SAMPLING_RADIUS if center_sampling_radius is None \
        else check_finite_number(center_sampling_radius, "center_sampling_radius", above=0)
    if qfl and arch not in QFL_ARCHS:
        raise ValueError(f"loss='qfl' is implemented for arch {QFL_ARCHS}, not {arch!r}")
    return backbone, fcos_sizes, radius


@dataclass(frozen=True)
class _Spec:
    """:func:`build_detector`'s checked arguments, as the per-arch builders take them."""

    arch: str
    num_classes: int
    backbone: str
    image_size: int
    options: Any  # HarmonicOptions, QFLOptions or None (standard)
    extra: Dict[str, Any]  # detector_kwargs
    trainable_backbone_layers: Optional[int]
    pyramid: Dict[str, Any]  # fpn_backbone's fpn_channels, frozen_bn, trainable_layers
    fcos_anchor_sizes: Tuple[Tuple[float, ...], ...]
    center_sampling_radius: float

    @property
    def size(self) -> Dict[str, int]:
        return dict(min_size=self.image_size, max_size=self.image_size)


def _build_ssd(spec: _Spec) -> nn.Module:
    # torchvision's SSDlite320 parts (backbone, anchors, head, settings), for a square of image_size
    ref = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=spec.num_classes,
                                        trainable_backbone_layers=spec.trainable_backbone_layers)
    kwargs = dict(image_mean=ref.transform.image_mean, image_std=ref.transform.image_std, head=ref.head,
                  score_thresh=ref.score_thresh, nms_thresh=ref.nms_thresh,
                  detections_per_img=ref.detections_per_img, topk_candidates=ref.topk_candidates,
                  positive_fraction=1 / (1 + ref.neg_to_pos_ratio), **spec.extra)
    args = (ref.backbone, ref.anchor_generator, (spec.image_size, spec.image_size), spec.num_classes)
    return SSD(*args, **kwargs) if spec.options is None else HarmonicSSD(*args, options=spec.options, **kwargs)


def _build_fcos(spec: _Spec) -> nn.Module:
    body = fpn_backbone(spec.backbone, levels="p3p7", **spec.pyramid)
    head = _head(spec.options, (StandardFCOSHead, HarmonicFCOSHead, QFLFCOSHead), body.out_channels, 1,
                 spec.num_classes)
    anchors = AnchorGenerator(spec.fcos_anchor_sizes, ((1.0,),) * 5)
    cls = _detector_class("fcos", isinstance(spec.options, QFLOptions))
    return cls(body, spec.num_classes, anchor_generator=anchors, head=head,
               center_sampling_radius=spec.center_sampling_radius, **spec.size, **spec.extra)


def _build_retinanet(spec: _Spec) -> nn.Module:
    body = fpn_backbone(spec.backbone, levels="p3p7", **spec.pyramid)
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in _anchor_sizes(spec.image_size, 32))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    head = _head(spec.options, (RetinaNetHead, HarmonicRetinaNetHead, QFLRetinaNetHead), body.out_channels, 9,
                 spec.num_classes)
    return RetinaNet(body, spec.num_classes, anchor_generator=anchors, head=head, **spec.size, **spec.extra)


def _build_rcnn(spec: _Spec) -> nn.Module:
    body = fpn_backbone(spec.backbone, levels="p2p6", **spec.pyramid)
    anchors = AnchorGenerator(tuple((s,) for s in _anchor_sizes(spec.image_size, 32)), ((0.5, 1.0, 2.0),) * 5)
    model = _detector_class(spec.arch, False)(body, spec.num_classes, rpn_anchor_generator=anchors, **spec.size,
                                              **spec.extra)
    if spec.options is not None:
        model.roi_heads = HarmonicRoIHeads.from_roi_heads(model.roi_heads, spec.options)
    return model


# one builder per arch: each makes its parts in torchvision's order (the RNG draws, hence the weights, follow it)
_BUILDERS = {"ssd": _build_ssd, "fcos": _build_fcos, "retinanet": _build_retinanet, "faster_rcnn": _build_rcnn,
             "mask_rcnn": _build_rcnn}


def build_detector(arch: str, num_classes: int, *, loss: Union[str, LossOptions] = "standard",
                   backbone: Optional[str] = None,
                   image_size: int = 128, pretrained: Optional[str] = None, fpn_channels: Optional[int] = None,
                   trainable_backbone_layers: Optional[int] = None,
                   fcos_anchor_sizes: Optional[Sequence[float]] = None, center_sampling_radius: Optional[float] = None,
                   detector_kwargs: Optional[Mapping[str, Any]] = None, **loss_options: Any) -> nn.Module:
    """A torchvision detector whose training loss is the preset ``loss`` (see :mod:`harmonicdet.models.presets`).

    Weights are random and nothing is downloaded, unless ``pretrained`` names a
    local state dict (see :func:`harmonicdet.models.pretrained.load_pretrained`);
    batch norm is trainable from scratch and frozen with pretrained weights, as in
    torchvision. Anchor sizes are torchvision's for images of 512 px and more and
    shrink proportionally (to at least 8 px) for smaller ones; FCOS keeps
    torchvision's (equal to the strides) unless ``fcos_anchor_sizes`` is given.

    Args:
        arch: ``faster_rcnn`` | ``mask_rcnn`` | ``retinanet`` | ``fcos`` | ``ssd`` (SSDlite).
        num_classes: classes including background (torchvision's convention, e.g. 11 for 10 classes).
        loss: a preset, ``standard`` | ``harmonic`` | ``harmonic_iou`` | ``harmonicdet`` |
            ``standard_posweight`` | ``qfl`` (``fcos`` and ``retinanet`` only), with
            ``**loss_options`` its overrides; or the options object itself
            (:class:`~harmonicdet.losses.HarmonicOptions`, :class:`~harmonicdet.losses.QFLOptions`, or
            ``None`` for ``standard``), already validated, as a run config's ``build_model`` passes it.
        backbone: ``resnet18`` | ``resnet34`` | ``resnet50`` | ``mobilenet_v2`` |
            ``mobilenet_v3_large``, with a five-level FPN; default ``resnet18``. ``ssd`` is
            SSDlite with (and defaults to) ``mobilenet_v3_large``.
        image_size: images are resized to it (``min_size = max_size = image_size``;
            SSD: a fixed square), e.g. 128 for CPU training.
        pretrained: path of a local state dict of the detector or of its backbone (an ImageNet
            classifier of the backbone's architecture included), or a named file such as
            ``imagenet:mobilenet_v2`` (see :mod:`harmonicdet.models.pretrained`); loaded strictly.
        fpn_channels: FPN channels (default torchvision's 256; fewer make CPU training cheaper;
            FCOS: a multiple of 32, at least 64, for its GroupNorm(32); not for ``ssd``).
        trainable_backbone_layers: as torchvision (default: all, or 3 with ``pretrained``).
        fcos_anchor_sizes: ``fcos`` only: the five anchor sizes of P3-P7, positive and
            strictly increasing; default torchvision's ``(8, 16, 32, 64, 128)``. They set
            the levels' scale ranges ``(4 size, 8 size)``, the centre-sampling radius and
            the box coder's normalisation (see the module docstring).
        center_sampling_radius: ``fcos`` only: torchvision FCOS's ``center_sampling_radius``
            (> 0, in units of the anchor size; default 1.5).
        detector_kwargs: further keyword arguments of the torchvision class, e.g. Faster
            R-CNN's ``box_batch_size_per_image`` or ``rpn_post_nms_top_n_train`` (cheaper CPU
            training) or ``score_thresh``/``detections_per_img``; not those set above
            (anchors, head, sizes).
        **loss_options: overrides of the preset: ``alpha``, ``gamma``, ``tc_margin``,
            ``detach_factors``, ``beta_c_mode``, ``box_loss`` (harmonic presets);
            ``positive_weight`` (``standard_posweight``, default 1.9; also ``alpha``,
            ``gamma``, ``tc_margin``, ``box_loss``); ``qfl_beta`` (``qfl``, default 2).

    Raises:
        ValueError: an unknown arch, backbone, preset or loss option (named in the
            message), or an invalid value.
    """
    for name, value in (("num_classes", num_classes), ("image_size", image_size), ("fpn_channels", fpn_channels),
                        ("trainable_backbone_layers", trainable_backbone_layers)):
        if value is not None and not is_int(value):  # e.g. "64" from a config: refused by name, not a TypeError
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(loss, str):
        options = harmonic_options(loss, loss_options)
    elif loss_options:
        raise ValueError(f"loss is an options object; give its values there, not as {sorted(loss_options)}")
    else:
        options = loss
    qfl = isinstance(options, QFLOptions)
    backbone, fcos_sizes, radius = _check_arguments(arch, num_classes, backbone, image_size, fpn_channels,
                                                    fcos_anchor_sizes, center_sampling_radius, qfl)
    extra = _detector_kwargs(arch, qfl, detector_kwargs)
    if trainable_backbone_layers is None and pretrained is not None:
        trainable_backbone_layers = 3
    spec = _Spec(arch=arch, num_classes=num_classes, backbone=backbone, image_size=image_size, options=options,
                 extra=extra, trainable_backbone_layers=trainable_backbone_layers,
                 pyramid=dict(fpn_channels=256 if fpn_channels is None else fpn_channels,
                              frozen_bn=pretrained is not None, trainable_layers=trainable_backbone_layers),
                 fcos_anchor_sizes=fcos_sizes, center_sampling_radius=radius)
    model = _BUILDERS[arch](spec)
    if pretrained is not None:
        load_pretrained(model, pretrained, backbone=backbone)
    return model
