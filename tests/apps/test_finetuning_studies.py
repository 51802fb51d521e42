"""The two shipped fine-tuning studies expand to valid runs: the pretrained MobileNetV2-FPN everywhere, the
scenes' three variants on three seeds per arch, the tree crowns' two folds (distinct tile sets) on five seeds."""

from pathlib import Path

from harmonicdet.apps.study import load_study

STUDIES = Path(__file__).resolve().parents[2] / "src" / "harmonicdet" / "configs" / "studies"


def test_the_pretrained_scenes_study_expands_to_valid_runs():
    runs = {run.name: run for run in load_study(STUDIES / "scenes_pretrained_cpu.yaml").runs}
    assert len(runs) == 18
    assert {(r.arch, r.variant) for r in runs.values()} == {(a, v) for a in ("fcos", "faster_rcnn")
                                                            for v in ("standard", "harmonicdet", "standard_posweight")}
    assert all(r.config["model"]["pretrained"] == "imagenet:mobilenet_v2" and r.config["model"]["backbone"]
               == "mobilenet_v2" and r.config["train"]["max_iters"] == 2000 for r in runs.values())
    assert runs["faster_rcnn-standard_posweight-s2"].config["model"]["loss_options"] == {"positive_weight": 1.72}


def test_the_tree_crowns_study_has_two_folds_of_five_seeds():
    runs = load_study(STUDIES / "tree_crowns_cpu.yaml").runs
    assert len(runs) == 20 and {r.variant for r in runs} == {"standard", "harmonicdet"}
    assert {r.seed for r in runs} == set(range(5))
    folds = {r.arch: (r.config["data"]["train"]["ann_file"], r.config["data"]["val"]["ann_file"]) for r in runs}
    assert folds == {
        "faster_rcnn_large": ("data/tree_crowns/tiles_large/annotations/instances_train.json",
                              "data/tree_crowns/tiles_large/annotations/instances_val.json"),
        "faster_rcnn_small": ("data/tree_crowns/tiles_small/annotations/instances_train.json",
                              "data/tree_crowns/tiles_small/annotations/instances_val.json")}
    assert all(r.config["model"]["num_classes"] == 2 and r.config["model"]["image_size"] == 256 for r in runs)
