"""Zero-shot classification, zero-shot retrieval and linear probes (CLIP paper, open_clip).

Classification: for each class, embed every prompt template filled with the class name,
L2-normalise, average, renormalise; classify an image by cosine similarity to the class
embeddings. Metrics: top-1, top-5 and mean per-class recall. Retrieval: recall@k both ways,
where an image with several captions is found when any of them is in the top k. Linear probe:
clip_benchmark's protocol (a linear layer on L2-normalised frozen image features, its weight
decay searched on a validation part of the train split, then tested on the test split).
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


def _train_probe(X: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, lr: float, epochs: int,
                 batch_size: int, seed: int) -> torch.nn.Linear:
    """clip_benchmark's probe: one linear layer, AdamW, cosine learning rate without warmup."""
    with torch.inference_mode(False), torch.enable_grad():  # callers evaluate under no_grad / inference_mode
        return _fit(X.clone(), y.clone(), n_classes, weight_decay, lr, epochs, batch_size, seed)


def _fit(X, y, n_classes, weight_decay, lr, epochs, batch_size, seed) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the probe's init is seeded without touching the trainer's RNG stream
        torch.manual_seed(seed)
        probe = torch.nn.Linear(X.shape[1], n_classes)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(y) // batch_size)
    total = epochs * steps_per_epoch
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=g)
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            for group in opt.param_groups:
                group["lr"] = 0.5 * (1 + np.cos(np.pi * step / total)) * lr
            idx = order[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(probe(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


def linear_probe(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray, test_y: np.ndarray, val_proportion: float = 0.2,
                 lr: float = 0.1, epochs: int = 10, batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """clip_benchmark's linear-probe protocol (itself OpenAI's CLIP paper, A.3, with AdamW for L-BFGS).

    Features are L2-normalised. `val_proportion` of the train split is held out to choose the
    weight decay among 97 values log-spaced over [1e-6, 1e2]: 7 evenly spaced first, then a
    binary refinement around the best (spans 8, 4, 2, 1). The probe is then trained on the
    whole train split with that weight decay and tested on the test split."""
    with torch.inference_mode(False):
        return _linear_probe(train_X, train_y, test_X, test_y, val_proportion, lr, epochs, batch_size, seed)


def _linear_probe(train_X, train_y, test_X, test_y, val_proportion, lr, epochs, batch_size, seed) -> dict[str, float]:
    Xtr = F.normalize(torch.as_tensor(train_X, dtype=torch.float32), dim=-1)
    Xte = F.normalize(torch.as_tensor(test_X, dtype=torch.float32), dim=-1)
    ytr, yte = torch.as_tensor(train_y, dtype=torch.long), torch.as_tensor(test_y, dtype=torch.long)
    n_classes = int(max(ytr.max(), yte.max())) + 1
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(len(ytr) * val_proportion))
    val, fit = perm[:n_val], perm[n_val:]
    wds = np.logspace(-6, 2, num=97).tolist()
    scores: dict[int, float] = {}

    def score(i: int) -> float:
        if i not in scores:
            probe = _train_probe(Xtr[fit], ytr[fit], n_classes, wds[i], lr, epochs, batch_size, seed)
            with torch.no_grad():
                scores[i] = (probe(Xtr[val]).argmax(1) == ytr[val]).float().mean().item()
        return scores[i]

    def peak(candidates: list[int]) -> int:
        best, best_acc = candidates[0], -1.0
        for i in candidates:  # the first of equals wins, as in clip_benchmark's find_peak
            if score(i) > best_acc:
                best, best_acc = i, score(i)
        return best

    best = peak(list(range(0, 97, 16)))  # 1e-6, 1e-4.67, ..., 1e2
    span = 8
    while span > 0:
        best = peak([max(best - span, 0), best, min(best + span, 96)])
        span //= 2
    probe = _train_probe(Xtr, ytr, n_classes, wds[best], lr, epochs, batch_size, seed)
    with torch.no_grad():
        logits = probe(Xte)
    pred = logits.argmax(1)
    recalls = [(pred[yte == c] == c).float().mean().item() for c in range(n_classes) if (yte == c).any()]
    out = {"top1": (pred == yte).float().mean().item(), "mean_per_class_recall": float(np.mean(recalls)),
           "weight_decay": float(wds[best]), "val_top1": float(scores[best])}
    if n_classes >= 5:
        out["top5"] = (logits.topk(5, dim=1).indices == yte[:, None]).any(1).float().mean().item()
    return out
