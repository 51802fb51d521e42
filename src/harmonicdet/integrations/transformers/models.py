"""Random-init RT-DETR / D-FINE models from a config alone: :func:`detr_config` and :func:`build_detr`.

Every model has its own ResNet backbone sub-config (transformers' ``RTDetrResNetConfig``), so
building it reads no file and contacts no hub (a backbone given by name would download it).
Sizes, for 128 px scenes (feature strides 8/16/32: 16x16 + 8x8 + 4x4 = 336 tokens):

========= ========================================= ======= ======== ======= ==========
size      backbone (basic blocks, widths)           hidden  decoder  queries denoising
========= ========================================= ======= ======== ======= ==========
``tiny``  1-1-1-1, 16/32/64/128 (tests)             64      2        30      20
``small`` ResNet-18 at half width, 2-2-2-2, 32-256  128     3        100     50
``r18``   ResNet-18, 2-2-2-2, 64-512 (RT-DETR-R18)  256     3        300     100
========= ========================================= ======= ======== ======= ==========

``hidden`` is both the encoder's and the decoder's width (FFN 4x, RT-DETR-R18's
``hidden_expansion`` 0.5 for ``r18``); the loss weights, matcher and denoising settings are
the library's defaults (VFL 1, L1 5, GIoU 2).
"""

from __future__ import annotations

from typing import Any, Dict

__all__ = ["SIZES", "build_detr", "detr_config"]

SIZES: Dict[str, Dict[str, Any]] = {
    "tiny": {"depths": [1, 1, 1, 1], "widths": [16, 32, 64, 128], "hidden": 64, "decoder_layers": 2, "queries": 30,
             "denoising": 20, "heads": 4, "expansion": 1.0},
    "small": {"depths": [2, 2, 2, 2], "widths": [32, 64, 128, 256], "hidden": 128, "decoder_layers": 3,
              "queries": 100, "denoising": 50, "heads": 8, "expansion": 1.0},
    "r18": {"depths": [2, 2, 2, 2], "widths": [64, 128, 256, 512], "hidden": 256, "decoder_layers": 3,
            "queries": 300, "denoising": 100, "heads": 8, "expansion": 0.5},
}


def detr_config(arch: str, size: str = "small", num_labels: int = 10, **overrides: Any) -> Any:
    """The transformers config of ``arch`` (``"rt_detr"``, ``"rt_detr_v2"``, ``"d_fine"``) at ``size`` (:data:`SIZES`)
    with ``num_labels`` classes; ``overrides`` are further config fields (e.g. ``num_queries``)."""
    from transformers import DFineConfig, RTDetrConfig, RTDetrResNetConfig, RTDetrV2Config

    classes = {"rt_detr": RTDetrConfig, "rt_detr_v2": RTDetrV2Config, "d_fine": DFineConfig}
    if arch not in classes:
        raise ValueError(f"arch must be one of {tuple(classes)}, got {arch!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {tuple(SIZES)}, got {size!r}")
    s = SIZES[size]
    backbone = RTDetrResNetConfig(embedding_size=s["widths"][0], hidden_sizes=s["widths"], depths=s["depths"],
                                  layer_type="basic", out_indices=[2, 3, 4])
    hidden = s["hidden"]
    fields = dict(backbone_config=backbone, encoder_in_channels=s["widths"][1:], encoder_hidden_dim=hidden,
                  encoder_ffn_dim=4 * hidden, hidden_expansion=s["expansion"], d_model=hidden,
                  decoder_in_channels=[hidden] * 3, decoder_ffn_dim=4 * hidden, decoder_layers=s["decoder_layers"],
                  num_queries=s["queries"], num_denoising=s["denoising"], encoder_attention_heads=s["heads"],
                  decoder_attention_heads=s["heads"], num_labels=num_labels)
    return classes[arch](**{**fields, **overrides})


def build_detr(arch: str, size: str = "small", num_labels: int = 10, **overrides: Any) -> Any:
    """A random-init ``*ForObjectDetection`` model of :func:`detr_config` (seed torch first for a given init)."""
    from transformers import DFineForObjectDetection, RTDetrForObjectDetection, RTDetrV2ForObjectDetection

    config = detr_config(arch, size, num_labels, **overrides)
    models = {"rt_detr": RTDetrForObjectDetection, "rt_detr_v2": RTDetrV2ForObjectDetection,
              "d_fine": DFineForObjectDetection}
    return models[arch](config)
