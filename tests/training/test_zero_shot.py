from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import real
from training.eval.datasets import load_imagefolder
from training.zero_shot import class_embeddings, classification_metrics, retrieval_metrics, zero_shot_classify


def test_exact_metrics_on_hand_built_logits():
    logits = torch.tensor([[3.0, 2, 1, 0, 0, 0], [0, 3, 2, 1, 0, 0], [1, 0, 0, 0, 0, 3], [0, 0, 0, 0, 0, 3]])
    labels = torch.tensor([0, 2, 0, 5])
    m = classification_metrics(logits, labels, 6)
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    assert m["mean_per_class_recall"] == (0.5 + 0.0 + 1.0) / 3  # classes 0, 2, 5 present


def test_template_averaged_classifier_equals_direct_computation():
    table = {"a cat.": [1.0, 0, 0], "the cat.": [0, 1.0, 0], "a dog.": [0, 0, 2.0], "the dog.": [0, 1.0, 1.0]}
    enc = lambda texts: torch.tensor([table[t] for t in texts])
    cls = class_embeddings(enc, ["cat", "dog"], ["a {}.", "the {}."])
    n = lambda v: v / v.norm()
    assert torch.allclose(cls[0], n(n(torch.tensor([1.0, 0, 0])) + n(torch.tensor([0, 1.0, 0]))))
    assert torch.allclose(cls[1], n(n(torch.tensor([0, 0, 2.0])) + n(torch.tensor([0, 1.0, 1.0]))))
    img = torch.nn.functional.normalize(torch.tensor([[1.0, 1, 0], [0, 0.2, 1]]), dim=-1)
    m, cm, per_class = zero_shot_classify(img, torch.tensor([0, 1]), cls)
    assert m["top1"] == 1.0 and cm.tolist() == [[1, 0], [0, 1]] and per_class == [1.0, 1.0]


def test_retrieval_with_several_captions_per_image():
    img = torch.eye(3)
    txt = torch.tensor([[0.0, 1, 0], [1.0, 0, 0], [0.9, 0.1, 0], [0.0, 0, 1]])
    owner = torch.tensor([0, 0, 1, 2])  # image 0 has captions 0 and 1
    m = retrieval_metrics(img, torch.nn.functional.normalize(txt, dim=-1), owner)
    # image 0 finds caption 1 first; image 1 ranks caption 1 (image 0's) above its own caption 2
    assert m["i2t_recall_at_1"] == pytest.approx(2 / 3) and m["i2t_recall_at_5"] == 1.0
    # text->image: caption 0 -> image 1 first (wrong), 1 -> image 0, 2 -> image 0 (wrong), 3 -> image 2
    assert m["t2i_recall_at_1"] == 0.5 and m["t2i_recall_at_5"] == 1.0


def test_real_cifar10_imagefolder_with_cifar_templates():
    from training.zero_shot import CIFAR_TEMPLATES

    data = load_imagefolder(real("cifar10-test-1000"))
    assert len(data.images) == 1000 and data.classnames[0] == "airplane" and np.bincount(data.labels).tolist() == [100] * 10
    from tests.conftest import train_bpe
    from training.config import SourceConfig, SuiteConfig
    from training.eval.suite import run_suite
    from training.model import CLIP, CLIPConfig
    from training.zero_shot import TEMPLATE_SETS

    tok = train_bpe([t.format(c) for t in CIFAR_TEMPLATES for c in data.classnames], vocab_size=300)
    tok.context_length = 24
    c = CLIPConfig.from_dict({"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
                              "text_cfg": {"context_length": 24, "vocab_size": tok.vocab_size, "width": 32, "heads": 2, "layers": 1, "eot_id": tok.eot_id}})
    torch.manual_seed(0)
    suite = SuiteConfig("cifar10-1000", SourceConfig("imagefolder", real("cifar10-test-1000")), tuple(TEMPLATE_SETS["cifar"]),
                        tasks=("zeroshot", "linear_probe"))
    metrics, artifacts = run_suite(CLIP(c), tok, suite, data, 32)
    assert set(metrics) == {"zeroshot/cifar10-1000/top1", "zeroshot/cifar10-1000/top5", "zeroshot/cifar10-1000/mean_per_class_recall",
                            "linprobe_heldout/cifar10-1000/top1", "linprobe_heldout/cifar10-1000/top5",
                            "linprobe_heldout/cifar10-1000/mean_per_class_recall", "linprobe_heldout/cifar10-1000/weight_decay"}
    assert artifacts["zeroshot-cifar10-1000-confusion"][0].sum() == 1000


def test_linear_probe_follows_clip_benchmark_protocol():
    """Fitted on the train split with a weight decay chosen on a held-out part of it, tested on
    the test split: labels that carry no information in the train split give chance on test."""
    from training.zero_shot import linear_probe

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16))

    def split(n):
        y = rng.integers(0, 5, n)
        return centres[y] + 0.6 * rng.normal(size=(n, 16)), y

    (trX, trY), (teX, teY) = split(400), split(200)
    good = linear_probe(trX, trY, teX, teY)
    assert good["top1"] > 0.9 and good["mean_per_class_recall"] > 0.9
    assert good["weight_decay"] in np.logspace(-6, 2, num=97).tolist()
    noise = linear_probe(trX, rng.permutation(trY), teX, teY)
    assert noise["top1"] < 0.45  # chance is 0.2: the probe really is trained on the train split


def test_imagenet_uses_openai_classnames(tmp_path):
    import ast
    import importlib.util

    from training.eval.datasets import OPENAI_IMAGENET_CLASSNAMES, load_imagenet

    ours = OPENAI_IMAGENET_CLASSNAMES.read_text().splitlines()
    spec = importlib.util.find_spec("open_clip")
    if spec is not None:  # the anchor: open_clip's zero_shot_metadata.IMAGENET_CLASSNAMES (read, not imported: it needs torchvision)
        src = Path(spec.submodule_search_locations[0], "zero_shot_metadata.py").read_text()
        theirs = next(ast.literal_eval(n.value) for n in ast.parse(src).body
                      if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "IMAGENET_CLASSNAMES")
        assert ours == list(theirs)
    wnids = [f"n{i:08d}" for i in range(1000)]
    lemmas = ["crane" if i in (134, 517) else f"thing{i}" for i in range(1000)]  # WordNet's two cranes
    synsets = tmp_path / "LOC_synset_mapping.txt"
    synsets.write_text("\n".join(f"{w} {n}, other" for w, n in zip(wnids, lemmas)))
    (tmp_path / "val").mkdir()
    names = load_imagenet(tmp_path / "val", synsets).classnames
    assert (names[134], names[517]) == ("crane bird", "construction crane")
    assert load_imagenet(tmp_path / "val", synsets, wordnet_names=True).classnames[517] == "crane"


def test_group_metrics_count_only_the_groups_images_among_all_classes(tmp_path):
    """head/tail metrics: images of the group's classes, classified among all classes."""
    import json

    from training.eval.suite import group_metrics
    from training.zero_shot import confusion_matrix

    # 3 classes; true labels and predictions
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 2, 2, 2, 0])  # class 0: 3/4, class 1: 0/2, class 2: 1/2
    cm = confusion_matrix(pred, labels, 3)
    per_class = [0.75, 0.0, 0.5]
    groups = tmp_path / "g.json"
    groups.write_text(json.dumps({"head": ["a"], "tail": ["b", "c"]}))
    m = group_metrics("s", cm, ["a", "b", "c"], per_class, groups)
    assert m["zeroshot/s/head/top1"] == 0.75
    assert m["zeroshot/s/tail/top1"] == 1 / 4  # 1 right of the tail's 4 images (a tail image taken for a head class is wrong)
    assert m["zeroshot/s/tail/mean_per_class_recall"] == 0.25
    groups.write_text(json.dumps({"tail": ["b", "zz"]}))
    with pytest.raises(ValueError, match="zz"):
        group_metrics("s", cm, ["a", "b", "c"], per_class, groups)


def test_a_suite_resolves_its_groups_in_its_world(tmp_path, monkeypatch):
    """`class_groups: world:...` resolves inside the suite's world, like its images (the tiny world
    here; data_specs/eval/sample-concepts.yaml does the same in the default one)."""
    import dataclasses
    import json

    from flows.configs import suite_config
    from tasks.specs import SuiteSpec, load_spec
    from training.config import SuiteConfig

    monkeypatch.setenv("OPENWIT_STATE", str(tmp_path))
    spec = {"kind": "eval-suite", "name": "s", "source": {"kind": "world", "path": "world:eval/shape", "world": {"size": "tiny", "seed": 0}},
            "class_groups": "world:eval/groups.json"}
    s = suite_config(spec)
    assert str(s.source.path).endswith("eval/shape") and s.class_groups == s.source.path.parent / "groups.json"
    shipped = load_spec("data_specs/eval/sample-concepts.yaml", SuiteSpec)
    assert shipped.class_groups == "world:eval/concepts-groups.json" and shipped.source.world.size == "default"
    assert isinstance(s, SuiteConfig) and dataclasses.is_dataclass(s) and s.source.path.is_absolute()  # typed, as the trainer receives it
    assert json.loads(json.dumps(str(s)))


def test_a_suite_with_chinese_class_names_prompts_in_chinese(tmp_path, monkeypatch):
    """`classnames_file` maps the suite's class folders to other names (the sample world's Chinese
    ones): the classifier is built from them, in folder order, and the metrics keep the suite's name."""
    import dataclasses

    from flows.configs import suite_config
    from tests.conftest import train_bpe
    from training.eval.datasets import suite_data
    from training.eval.suite import run_suite, suite_classnames
    from training.model import CLIP, CLIPConfig

    monkeypatch.setenv("OPENWIT_STATE", str(tmp_path))
    suite = suite_config("data_specs/eval/sample-tiny-shape-zh.yaml")
    data = suite_data(suite)
    names = suite_classnames(suite, data.classnames)
    assert data.classnames[:3] == ["circle", "crescent", "cross"] and names[:3] == ["圆形", "新月形", "十字形"]
    assert suite.language == "zh"
    tok = train_bpe([t.format(n) for t in suite.templates for n in names] * 5, vocab_size=300)
    tok.context_length = 16
    c = CLIPConfig.from_dict({"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
                              "text_cfg": {"context_length": 16, "vocab_size": tok.vocab_size, "width": 32, "heads": 2, "layers": 1, "eot_id": tok.eot_id}})
    torch.manual_seed(0)
    metrics, artifacts = run_suite(CLIP(c), tok, suite, data, 32)
    assert 0 <= metrics["zeroshot/sample-tiny-shape-zh/top1"] <= 1
    assert artifacts["zeroshot-sample-tiny-shape-zh-confusion"][1] == names
    with pytest.raises(ValueError, match="names no class for"):
        suite_classnames(dataclasses.replace(suite, classnames={"circle": "圆形"}), ["circle", "star"])
