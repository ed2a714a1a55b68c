"""Tutorial 4: wrap a timm model so that a chosen block runs on canonicalized features, and train it.

Builds timm's own ViT-Tiny architecture at toy size (28×28 MNIST digits, 4×4 patches, 2 blocks of width 32; no
download), lists its insertion points with ``find_blocks``, wraps block 1 with a deep equilibrium canonicalizer
over monotone scaling, checks that the wrapper keeps timm's parameter names, trains it for 40 steps with a plain
torch loop on the bundled digits, then once more with equican's own trainer (method ``latent``). Last, exact
rot90 invariance with the escnn C4 canonicalizer, and why it needs a stem that commutes with rot90.

Run it from any directory (it writes ``latent_run/`` there); about 20 s on one CPU thread:

    python docs/tutorials/latent_timm.py
"""

from __future__ import annotations

import math
import statistics
import warnings

import timm
import torch
import torch.nn.functional as F

import equican
from equican.config import TrainConfig, apply_overrides
from equican.data import load_mnist
from equican.errors import ConvergenceWarning
from equican.latent import LatentCanonicalized, find_blocks
from equican.models import SmallCNN
from equican.train import load_checkpoint, train

NAME = "vit_tiny_patch16_224"
TIMM = dict(img_size=28, patch_size=4, depth=2, embed_dim=32, num_heads=2, in_chans=1, num_classes=10)

images, labels = load_mnist("train", limit=256)  # the digits bundled with equican: uint8 (256, 28, 28)
x = images[:, None].float() / 255  # (256, 1, 28, 28)

# 1. Which blocks can be wrapped? find_blocks reads the model: a ViT's blocks see (B, 1 + 7·7, 32) tokens, which the
#    wrapper views as a 32-channel 7×7 patch grid (the class token is left alone).
torch.manual_seed(0)
bare = timm.create_model(NAME, pretrained=False, **TIMM)
names, _, layout = find_blocks(bare)
print(f"insertion points of {NAME}: {names}, layout {layout!r}")
assert names == ["blocks.0", "blocks.1"] and layout == "tokens"

# 2. Wrap: the same call as timm.create_model, plus where to canonicalize and over which group. Block 1 now runs on
#    act(h, features), h the DEQ's canonicalizing element, and its output is mapped back by act(g, ·), g = h⁻¹.
model = equican.create_model(NAME, group="monotone", canonicalizer="deq", at=1,
                             canonicalizer_options={"channels": (8,)}, **TIMM)
print(f"wrapped: {model.extra_repr()}")

# The wrapper only adds hooks, so timm's parameter names are unchanged: a bare timm state_dict loads strictly.
keys = model.state_dict().keys()
assert {k.removeprefix("model.") for k in keys if k.startswith("model.")} == set(bare.state_dict())
model.model.load_state_dict(bare.state_dict())
canon_params = sum(p.numel() for p in model.canonicalizers.parameters())
print(f"timm parameters: {sum(p.numel() for p in bare.parameters())}, canonicalizer parameters: {canon_params} "
      f"(under 'canonicalizers.1.')")

# The DEQ's output head starts at zero, so an untrained wrapper predicts the identity element and computes what
# the bare model computes.
with torch.no_grad():
    gap = float((model.eval()(x[:8]) - bare.eval()(x[:8])).abs().max())
print(f"untrained wrapper vs bare timm model, max |Δ logits| = {gap:.1e}")
assert gap < 1e-5

# forward_canon returns the logits and, per insertion point, the canonical features and the element.
logits, results = model.forward_canon(x[:4])
print(f"logits {tuple(logits.shape)}, canonical features {tuple(results[1].x.shape)}, g {tuple(results[1].g.shape)}")
assert logits.shape == (4, 10) and results[1].x.shape == (4, 32, 7, 7) and results[1].g.shape == (4, 2, 33, 33)

# 3. Train with a plain torch loop: cross-entropy plus a small prior that keeps the elements near the identity.
torch.manual_seed(0)
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
losses, converged = [], []
model.train()
with warnings.catch_warnings():
    # 5 solver iterations per step (the paper's MNIST setting) rarely reach the tolerance; the DEQ then uses its
    # best iterate and warns. We count it from info["converged"] instead.
    warnings.simplefilter("ignore", ConvergenceWarning)
    for step in range(40):
        batch = torch.arange(step * 32, step * 32 + 32) % len(x)
        logits, results = model.forward_canon(x[batch])
        loss = F.cross_entropy(logits, labels[batch]) + 0.1 * model.prior_loss(results).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        converged.append(float(results[1].info["converged"].float().mean()))
        if step % 10 == 0 or step == 39:
            print(f"step {step:2d}  loss {losses[-1]:.3f}")
first, last = statistics.fmean(losses[:5]), statistics.fmean(losses[-5:])
print(f"mean loss of the first 5 steps {first:.3f}, of the last 5 {last:.3f}; "
      f"DEQ converged on {statistics.fmean(converged):.0%} of the inputs")
assert all(map(math.isfinite, losses)) and last < first - 0.1

# 4. The same with equican's trainer: method 'latent' builds this wrapper around any timm model by name, and adds
#    checkpoints, schedules, DDP and evaluation. (CLI: equican train --method latent --model vit_tiny_patch16_224 ...)
config = apply_overrides(TrainConfig(), [
    "data.dataset=mnist", "data.train_limit=128", "data.test_limit=32", "eval.limit=16",
    f"model.name={NAME}", "model.options={patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}",
    "method.name=latent", "method.options={at: [1], channels: [8], prior_weight: 0.1}",
    "optim.epochs=2", "optim.batch_size=32", "progress=false", "out=latent_run",
])
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    result = train(config, overwrite=True)  # a rerun of the tutorial replaces its run
_, objective, _ = load_checkpoint("latent_run/checkpoint.pt")
print(f"equican.train.train: {result['epochs_done']} epochs, test accuracy on {result['eval']['samples']} digits "
      f"{result['eval']['accuracy']:.3f}; checkpoint holds a {type(objective.model).__name__} around a "
      f"{type(objective.model.model).__name__}")
assert result["complete"] and isinstance(objective.model, LatentCanonicalized)
assert type(objective.model.model) is type(bare)

# 5. Exact rot90 invariance: the escnn C4 canonicalizer is invariant by construction, so a model becomes exactly
#    invariant when everything before the insertion point commutes with rot90. The package's SmallCNN has no stem
#    (stage 0 reads the image); canonicalize there and leave the output canonical (uncanonicalize=False).
c4 = dict(canonicalizer="escnn", group="cyclic", uncanonicalize=False,
          canonicalizer_options={"channels": (4,), "kernel_size": 3})
digits = x[:4]


def rot90_gap(wrapper: LatentCanonicalized) -> float:
    with torch.no_grad():
        reference = wrapper.eval()(digits)
        return max(float((wrapper(torch.rot90(digits, k, dims=(-2, -1))) - reference).abs().max()) for k in (1, 2, 3))


torch.manual_seed(0)
cnn_gap = rot90_gap(LatentCanonicalized(SmallCNN(1, 10, channels=(4, 8)), at=0, **c4))
# A timm ViT's patch embedding and position embeddings come before block 0: they do not commute with rot90.
vit_gap = rot90_gap(LatentCanonicalized(timm.create_model(NAME, **TIMM), at=0, canonicalizer_input="image", **c4))
print(f"max |Δ logits| under rot90: SmallCNN + C4 at stage 0 {cnn_gap:.1e}; timm ViT + C4 at block 0 {vit_gap:.1e}")
assert cnn_gap < 1e-5 < 1e-4 < vit_gap
