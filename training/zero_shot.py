"""Zero-shot classification, zero-shot retrieval and linear probes (CLIP paper, open_clip).

Classification: for each class, embed every prompt template filled with the class name,
L2-normalise, average, renormalise; classify an image by cosine similarity to the class
embeddings. Metrics: top-1, top-5 and mean per-class recall. Retrieval: recall@k both ways,
where an image with several captions is found when any of them is in the top k. Linear probe:
logistic regression on frozen image features, its regularisation picked on a validation split.
Metric names are stable (`zeroshot/<suite>/top1`, ...), so runs line up in the MLflow UI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_IMAGENET_TEMPLATES = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.", "a cropped photo of a {}.",
    "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.",
    "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.",
    "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.",
    "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.",
    "itap of my {}.", "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
]
CIFAR_TEMPLATES = [
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.", "a low contrast photo of a {}.",
    "a high contrast photo of a {}.", "a bad photo of a {}.", "a good photo of a {}.", "a photo of a small {}.",
    "a photo of a big {}.", "a photo of the {}.", "a blurry photo of the {}.", "a black and white photo of the {}.",
    "a low contrast photo of the {}.", "a high contrast photo of the {}.", "a bad photo of the {}.",
    "a good photo of the {}.", "a photo of the small {}.", "a photo of the big {}.",
]
TEMPLATE_SETS = {"openai_imagenet": OPENAI_IMAGENET_TEMPLATES, "cifar": CIFAR_TEMPLATES, "simple": ["a photo of a {}."]}


@torch.no_grad()
def class_embeddings(encode_text: Callable[[list[str]], torch.Tensor], classnames: list[str], templates: list[str]) -> torch.Tensor:
    """[C, D]: per class, the renormalised mean of the normalised template embeddings."""
    out = []
    for name in classnames:
        emb = F.normalize(encode_text([t.format(name) for t in templates]).float(), dim=-1)
        out.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(out)


def classification_metrics(logits_NC: torch.Tensor, labels_N: torch.Tensor, n_classes: int) -> dict[str, float]:
    k = min(5, n_classes)
    topk = logits_NC.topk(k, dim=1).indices
    correct1 = topk[:, 0] == labels_N
    correct5 = (topk == labels_N[:, None]).any(dim=1)
    recalls = [correct1[labels_N == c].float().mean().item() for c in range(n_classes) if (labels_N == c).any()]
    return {"top1": correct1.float().mean().item(), "top5": correct5.float().mean().item(),
            "mean_per_class_recall": float(np.mean(recalls)) if recalls else 0.0}


def confusion_matrix(pred_N: torch.Tensor, labels_N: torch.Tensor, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (labels_N.numpy(), pred_N.numpy()), 1)
    return cm


@torch.no_grad()
def image_features(encode_image: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    for x, y in batches:
        feats.append(F.normalize(encode_image(x).float(), dim=-1))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def zero_shot_classify(img_feats_ND: torch.Tensor, labels_N: torch.Tensor, cls_emb_CD: torch.Tensor) -> tuple[dict, np.ndarray, list[float]]:
    logits = img_feats_ND @ cls_emb_CD.T
    C = cls_emb_CD.shape[0]
    m = classification_metrics(logits, labels_N, C)
    pred = logits.argmax(dim=1)
    per_class = [(pred[labels_N == c] == c).float().mean().item() if (labels_N == c).any() else float("nan") for c in range(C)]
    return m, confusion_matrix(pred, labels_N, C), per_class


def retrieval_metrics(img_ND: torch.Tensor, txt_MD: torch.Tensor, txt_owner_M: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """recall@k for image->text and text->image; txt_owner_M[j] = index of caption j's image."""
    sim = img_ND @ txt_MD.T  # [N, M]
    out = {}
    order_i2t = sim.argsort(dim=1, descending=True)
    owners_sorted = txt_owner_M[order_i2t]  # [N, M] image index of each ranked caption
    hit_rank = (owners_sorted == torch.arange(img_ND.shape[0])[:, None]).float().argmax(dim=1)  # first correct caption
    order_t2i = sim.T.argsort(dim=1, descending=True)  # [M, N]
    t2i_rank = (order_t2i == txt_owner_M[:, None]).float().argmax(dim=1)
    for k in ks:
        out[f"i2t_recall_at_{k}"] = (hit_rank < k).float().mean().item()
        out[f"t2i_recall_at_{k}"] = (t2i_rank < k).float().mean().item()
    return out


def linear_probe(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray, test_y: np.ndarray,
                 Cs=(0.01, 0.1, 1.0, 10.0, 100.0), seed: int = 0) -> dict[str, float]:
    """Logistic regression on frozen features; C picked on a 20% validation split of train."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(train_y))
    n_val = max(1, len(idx) // 5)
    val, tr = idx[:n_val], idx[n_val:]
    best_c, best = Cs[0], -1.0
    for c in Cs:
        clf = LogisticRegression(C=c, max_iter=1000).fit(train_X[tr], train_y[tr])
        acc = clf.score(train_X[val], train_y[val])
        if acc > best:
            best_c, best = c, acc
    clf = LogisticRegression(C=best_c, max_iter=1000).fit(train_X, train_y)
    return {"top1": float(clf.score(test_X, test_y)), "C": float(best_c), "val_top1": float(best)}
