import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import REPO, free_port, train_bpe
from training.checkpoint import load_model, save_model
from training.convert import from_open_clip, to_open_clip
from training.loss import clip_loss
from training.model import CLIP, CLIPConfig, count_params
from training.tokenizer import from_clip_bpe

OPEN_CLIP_COUNTS = {"RN50": 102_007_137, "ViT-B-32": 151_277_313, "ViT-B-16": 149_620_737,
                    "ViT-L-14": 427_616_513, "ViT-L-14-336": 427_944_193}


def cfg(name):
    return CLIPConfig.from_dict(json.loads((REPO / "training/model_configs" / f"{name}.json").read_text()))


@pytest.mark.parametrize("name,count", OPEN_CLIP_COUNTS.items())
def test_parameter_counts_equal_open_clip(name, count):
    with torch.device("meta"):
        assert count_params(CLIP(cfg(name))) == count


@pytest.mark.parametrize("name", ["debug-vit", "debug-rn"])
def test_shapes_and_similarity_api(name):
    m = CLIP(cfg(name)).eval()
    img, txt = torch.randn(3, 3, 32, 32), torch.randint(1, 1000, (5, 32))
    assert m.encode_image(img).shape == (3, 128) and m.encode_text(txt).shape == (5, 128)
    lpi, lpt = m.get_similarity(img, txt)
    assert lpi.shape == (3, 5) and torch.equal(lpt, lpi.T)
    assert torch.allclose(m.encode_image(img, normalize=True).norm(dim=-1), torch.ones(3))


def test_logit_scale_init_and_clamp():
    m = CLIP(cfg("debug-vit"))
    assert abs(m.logit_scale.exp().item() - 1 / 0.07) < 1e-4
    m.logit_scale.data.fill_(10.0)
    m.clamp_logit_scale()
    assert abs(m.logit_scale.exp().item() - 100) < 1e-3


def test_lock_image_tower_freezes_batchnorm_stats():
    m = CLIP(cfg("debug-rn"))
    m.lock_image_tower()
    m.train()
    before = m.visual.bn1.running_mean.clone()
    m.encode_image(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert torch.equal(before, m.visual.bn1.running_mean)
    assert not any(p.requires_grad for p in m.visual.parameters())


def _dist_worker(rank, world, port, img, txt, scale, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    B = img.shape[0] // world
    i = img[rank * B:(rank + 1) * B].clone().requires_grad_(True)
    t = txt[rank * B:(rank + 1) * B].clone().requires_grad_(True)
    s = scale.clone().requires_grad_(True)
    loss = clip_loss(i, t, s)
    (loss / world).backward()  # the mean over workers is the global loss (DDP averages gradients)
    out[rank] = (loss.item(), i.grad.clone(), t.grad.clone(), s.grad.clone())
    dist.destroy_process_group()


def test_distributed_loss_equals_single_process_value_and_gradients():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(10.0)
    i, t, s = img.clone().requires_grad_(True), txt.clone().requires_grad_(True), scale.clone().requires_grad_(True)
    ref = clip_loss(i, t, s)
    ref.backward()
    out = mp.Manager().dict()
    mp.spawn(_dist_worker, args=(2, free_port(), img, txt, scale, out), nprocs=2, join=True)
    assert abs((out[0][0] + out[1][0]) / 2 - ref.item()) < 1e-5
    assert torch.allclose(torch.cat([out[0][1], out[1][1]]), i.grad, atol=1e-6)
    assert torch.allclose(torch.cat([out[0][2], out[1][2]]), t.grad, atol=1e-6)
    assert torch.allclose(out[0][3] + out[1][3], s.grad, atol=1e-5)


def test_tokenizer_round_trip_and_truncation(tmp_path):
    texts = ["a red circle", "一个红色的圆圈", "blue star 🌟 on white", "the crescent is purple"] * 20
    tok = train_bpe(texts, tmp_path / "tok.json", vocab_size=400)
    for t in set(texts):
        assert tok.decode(tok.encode(t)) == t
    ids = tok(["word " * 100], context_length=16)[0]
    assert ids[0] == tok.sot_id and ids[-1] == tok.eot_id and len(ids) == 16
    short = tok(["a red circle"], context_length=16)[0]
    assert short[len(tok.encode("a red circle")) + 1] == tok.eot_id and short[-1] == 0


def test_clip_bpe_merges_file(tmp_path):
    merges = ["#version: 0.2", "r e", "re d</w>", "c i", "ci r", "cir c", "l e</w>", "circ le</w>"]
    (tmp_path / "bpe.txt").write_text("\n".join(merges) + "\n")
    tok = from_clip_bpe(tmp_path / "bpe.txt", n_merges=len(merges) - 1)
    assert tok.hf.decode(tok.encode("Red Circle")) == "red circle"
    assert tok.vocab_size == 512 + 7 + 2 and tok.eot_id == tok.vocab_size - 1


def test_checkpoint_and_open_clip_conversion_round_trip(tmp_path):
    tok = train_bpe(["a red circle", "a blue star"] * 10, vocab_size=300)
    c = cfg("debug-vit")
    c.text.vocab_size, c.text.eot_id = tok.vocab_size, tok.eot_id
    m = CLIP(c).eval()
    save_model(m, tmp_path / "ck", tok)
    m2, tok2, pre = load_model(tmp_path / "ck")
    x, t = torch.randn(2, 3, 32, 32), tok2(["a red circle", "a blue star"])
    assert torch.equal(m.encode_image(x), m2.encode_image(x)) and torch.equal(m.encode_text(t), m2.encode_text(t))
    assert pre.image_size == 32
    sd = m.state_dict()
    oc = to_open_clip(sd)
    assert "token_embedding.weight" in oc and "visual.transformer.resblocks.0.attn.in_proj_weight" in oc
    back = from_open_clip(oc)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_siglip_trained_checkpoint_round_trip_keeps_its_bias(tmp_path):
    """A model trained with the sigmoid loss saves `logit_bias`; loading it, or converting it to
    open_clip's layout and back, keeps the bias; a wrong-shaped state dict is a clear error."""
    from training.checkpoint import load_weights

    tok = train_bpe(["a red circle", "a blue star"] * 10, vocab_size=300)
    c = cfg("debug-rn")
    c.text.vocab_size, c.text.eot_id = tok.vocab_size, tok.eot_id
    m = CLIP(c).eval()
    m.add_logit_bias(-10.0)
    m2, _, _ = load_model(save_model(m, tmp_path / "ck", tok))
    assert float(m2.logit_bias) == -10.0
    fresh = CLIP(c)
    fresh.load_state_dict(from_open_clip(to_open_clip(m.state_dict())))
    assert float(fresh.logit_bias) == -10.0
    bad = dict(m.state_dict(), logit_scale=torch.zeros(2))
    with pytest.raises(ValueError, match="elsewhere does not fit the model: size mismatch for logit_scale"):
        load_weights(CLIP(c), bad, "elsewhere")


def test_the_logit_scale_can_come_back_from_the_cap():
    """At 100 the scale must still get a gradient (open_clip clamps after the step, not in forward)."""
    import math

    m = CLIP(cfg("debug-vit"))
    m.logit_scale.data.fill_(math.log(100))
    img, txt, scale = m(torch.randn(4, 3, 32, 32), torch.randint(1, 1000, (4, 32)))
    clip_loss(img, txt, scale).backward()
    assert m.logit_scale.grad is not None and m.logit_scale.grad.abs().item() > 0


def test_suites_run_on_the_model_device():
    """Evaluation during training feeds the model's device (the CUDA model crashed on CPU inputs)."""
    from PIL import Image

    from training.config import SourceConfig, SuiteConfig
    from training.eval.datasets import LabelledSet
    from training.eval.suite import run_suite

    class OnMeta(torch.nn.Module):  # parameters on another device than the CPU batches
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.empty(1, device="meta"))

        def encode_image(self, x):
            assert x.device.type == "meta"
            return torch.randn(x.shape[0], 8)

        def encode_text(self, t):
            assert t.device.type == "meta"
            return torch.randn(t.shape[0], 8)

    tok = train_bpe(["a red circle", "a blue square"] * 10, vocab_size=300)
    data = LabelledSet([Image.new("RGB", (32, 32))] * 4, np.array([0, 1, 0, 1]), ["circle", "square"])
    metrics, _ = run_suite(OnMeta(), tok, SuiteConfig("s", SourceConfig("imagefolder", Path("."))), data, 32)
    assert 0 <= metrics["zeroshot/s/top1"] <= 1


def test_gradient_accumulation_all_reduces_once_per_step(tmp_path):
    """DDP syncs gradients on the last micro-batch only (no_sync on the others), as open_clip's accum_freq."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from training.train_loop import param_groups, train_step

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = CLIP(cfg("debug-vit"))
        ddp = DDP(model)
        calls = []

        def hook(state, bucket):
            calls.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, hook)
        micro = [(torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8), torch.randint(1, 1000, (4, 32))) for _ in range(3)]
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=0.0)
        train_step(ddp, opt, micro, "clip", torch.device("cpu"), None, None)
        per_sync = len(set(calls))
        assert per_sync >= 1 and len(calls) == per_sync  # one all-reduce of each bucket per optimizer step, not three
    finally:
        dist.destroy_process_group()


def test_patch_dropout_is_set_from_the_spec():
    from flows.configs import model_config
    from tasks.specs import PretrainSpec

    base = {"kind": "pretrain", "name": "x", "output_dir": "x", "data": {"build": "b"}}
    spec = PretrainSpec.model_validate({**base, "model": "debug-vit", "train": {"patch_dropout": 0.5}})
    m = CLIP(model_config(spec))
    assert m.visual.patch_dropout == 0.5
    with pytest.raises(ValueError, match="ResNet image tower"):
        model_config(PretrainSpec.model_validate({**base, "model": "debug-rn", "train": {"patch_dropout": 0.5}}))


def test_rng_state_round_trips_through_a_checkpoint_file(tmp_path):
    """A resumed run draws the same random numbers (patch dropout, augmentation) as an unbroken one."""
    from training.train_loop import rng_state, set_rng_state

    torch.manual_seed(7)
    torch.rand(3)
    torch.save({"rng": rng_state(torch.device("cpu"))}, tmp_path / "state.pt")
    expected = torch.rand(5)
    torch.manual_seed(123)  # a fresh process seeds as it likes
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True)["rng"], torch.device("cpu"))
    assert torch.equal(torch.rand(5), expected)
