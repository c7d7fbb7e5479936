"""Autoregressive prior over code grids: a small decoder-only Transformer in raster order (nanoGPT-style).

A code grid (H, W) is read row by row as a sequence of L = H*W tokens. The model's input is
[start, c_0, ..., c_{L-2}] and its output at position i is the distribution of c_i given
c_<i, so every code, the first included, is modelled and the NLL covers the whole grid.
A class-conditional prior adds a class embedding to the start token.

With one code per image (the vanilla VAE, L = 1) the input is the start token alone: the
model is then honestly just a (class-conditional) categorical distribution over the K codes,
computed through a Transformer that sees a single constant token.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geovq.io import GeovqError, load_checkpoint, restore, save_checkpoint

LN2 = math.log(2.0)


@dataclass
class PriorConfig:
    K: int  # codes (vocabulary size)
    grid: tuple[int, int]  # (H, W) of a code grid; the sequence length is H*W
    n_classes: int = 0  # 0 = unconditional
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1

    @property
    def block_size(self) -> int:
        return self.grid[0] * self.grid[1]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"prior n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head}")
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cache=None):
        """x (B, T, C). With ``cache`` (a dict, empty at the first position), x is the next single
        position: its keys and values are appended to the cached ones, and it attends to all of them
        (key-value caching: sampling costs one position per step, not the whole prefix)."""
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if cache is not None:
            if T != 1:
                raise ValueError(f"a key-value cache takes one position at a time, got {T}")
            if cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=cache is None)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class CodePrior(nn.Module):
    """p(codes | class) = prod_i p(c_i | c_<i, class) over a raster-ordered code grid."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.K, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.start = nn.Parameter(torch.zeros(cfg.n_embd))
        self.cls_emb = nn.Embedding(cfg.n_classes, cfg.n_embd) if cfg.n_classes else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.K, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying, as in GPT-2/nanoGPT
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    @property
    def conditional(self) -> bool:
        return self.cls_emb is not None

    def _check_labels(self, labels, batch):
        if self.conditional and labels is None:
            raise GeovqError("this prior is class-conditional: labels are required")
        if not self.conditional and labels is not None:
            raise GeovqError("this prior is unconditional: labels must not be given")
        if labels is not None:
            if labels.shape != (batch,):
                raise GeovqError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
            if len(labels) and (labels.min() < 0 or labels.max() >= self.config.n_classes):
                raise GeovqError(
                    f"labels must lie in [0, {self.config.n_classes}), found [{int(labels.min())}, {int(labels.max())}]"
                )

    def logits_from_prefix(self, prefix, labels=None, last_only=False):
        """Logits (B, t+1, K) of codes 0..t given a prefix (B, t) of already chosen codes (t < L).

        ``last_only``: just the logits (B, K) of code t, all that sampling needs.
        """
        B, t = prefix.shape
        if t >= self.config.block_size:
            raise GeovqError(f"prefix of {t} codes leaves nothing to predict (L = {self.config.block_size})")
        self._check_labels(labels, B)
        start = self.start.expand(B, 1, -1)
        if self.cls_emb is not None:
            start = start + self.cls_emb(labels)[:, None]
        x = torch.cat([start, self.tok_emb(prefix)], dim=1)
        x = self.drop(x + self.pos_emb(torch.arange(t + 1, device=prefix.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, -1] if last_only else x))

    def forward(self, codes, labels=None):
        """Logits (B, L, K): position i is the distribution of codes[:, i] given codes[:, :i]."""
        return self.logits_from_prefix(codes[:, :-1], labels)

    def next_logits(self, labels=None, batch=None):
        """A generator of the logits (B, K) of code t given codes 0..t-1: send it each chosen code
        (B,) in turn. Key-value cached, so each step runs one position through the model; the same
        logits as ``logits_from_prefix(prefix, last_only=True)`` up to float rounding."""
        B = batch if labels is None else len(labels)
        self._check_labels(labels, B)
        x = self.start.expand(B, 1, -1)
        if self.cls_emb is not None:
            x = x + self.cls_emb(labels)[:, None]
        caches = [{} for _ in self.blocks]
        for t in range(self.config.block_size):
            h = self.drop(x + self.pos_emb.weight[t])
            for block, cache in zip(self.blocks, caches):
                h = block(h, cache)
            chosen = yield self.head(self.ln_f(h[:, -1]))
            x = self.tok_emb(chosen)[:, None]


# ---------------------------------------------------------------- checks and likelihood
def check_codes(model_or_cfg, codes, what="codes"):
    """Codes as a (N, L) int64 tensor; one-line GeovqError if their grid or range disagrees with the prior."""
    cfg = model_or_cfg.config if isinstance(model_or_cfg, CodePrior) else model_or_cfg
    codes = torch.as_tensor(np.asarray(codes) if not torch.is_tensor(codes) else codes)
    if codes.ndim != 3 or tuple(codes.shape[1:]) != tuple(cfg.grid):
        raise GeovqError(
            f"{what}: grid shape {tuple(codes.shape[1:])} disagrees with the prior's "
            f"grid {tuple(cfg.grid)} (expected codes (N, {cfg.grid[0]}, {cfg.grid[1]}))"
        )
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise GeovqError(f"{what}: expected integer codes, got {codes.dtype}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= cfg.K):
        raise GeovqError(f"{what}: codes must lie in [0, {cfg.K}), found [{int(codes.min())}, {int(codes.max())}]")
    return codes.long().reshape(len(codes), -1)


def _labels(labels):
    return None if labels is None else torch.as_tensor(np.asarray(labels)).long()


@torch.no_grad()
def nll_bits(model, codes, labels=None, *, batch_size=1024, device=None):
    """Mean negative log-likelihood of code grids (N, H, W): (bits per token, bits per image)."""
    model.eval()
    device = device or next(model.parameters()).device
    seq = check_codes(model, codes)
    y = _labels(labels) if model.conditional else None  # an unconditional prior ignores labels
    model._check_labels(y, len(seq))
    total = 0.0
    for i in range(0, len(seq), batch_size):
        x = seq[i : i + batch_size].to(device)
        logits = model(x, None if y is None else y[i : i + batch_size].to(device))
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1), reduction="sum").item()
    bits_per_token = total / max(seq.numel(), 1) / LN2
    return bits_per_token, bits_per_token * model.config.block_size


def unigram_bits(train_codes, test_codes, K: int, *, alpha: float = 1.0, train_labels=None, test_labels=None) -> float:
    """Cross-entropy in bits per token of test codes under the codes' unigram distribution on the
    train codes, add-``alpha`` smoothed: p(k) = (n_k + alpha) / (N + alpha K), the NLL of a
    context-free model of the same codes (alpha = 1: Laplace's add-one, so an unseen code costs
    log2(N + K) bits, not infinity).

    With ``train_labels`` and ``test_labels`` (one per grid) the distribution is fitted per class
    and each test grid is scored under its class's: the context-free baseline of a class-conditional prior.
    """
    train, test = np.asarray(train_codes), np.asarray(test_codes)
    if alpha <= 0:
        raise ValueError(f"unigram_bits: alpha must be > 0 (an unseen test code would cost infinite bits), got {alpha}")
    for name, c in (("train", train), ("test", test)):
        if c.size == 0 or c.min() < 0 or c.max() >= K:
            raise ValueError(f"unigram_bits: {name} codes must be a non-empty array of values in [0, {K})")
    if (train_labels is None) != (test_labels is None):
        raise ValueError("unigram_bits: give labels for both the train and the test codes, or for neither")
    if train_labels is None:
        train_labels, test_labels = np.zeros(len(train), np.int64), np.zeros(len(test), np.int64)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    total = 0.0
    for c in np.unique(test_labels):
        counts = np.bincount(train[train_labels == c].ravel(), minlength=K).astype(np.float64)
        logp = np.log2(counts + alpha) - np.log2(counts.sum() + alpha * K)
        total -= logp[test[test_labels == c].ravel()].sum()
    return float(total / test.size)


# ---------------------------------------------------------------- training
def _optimizer(model, lr, weight_decay):
    """AdamW with weight decay on matrices only (not on biases, LayerNorms, start token), as nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _schedule(total_steps):
    """Linear warm-up then cosine decay to a tenth of the peak rate, over the epoch budget."""
    warmup = max(1, min(200, total_steps // 20))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def train_prior(codes, labels, K, params, *, seed, device, log=print):
    """Fit a CodePrior to code grids (N, H, W); returns (best model in eval mode, per-epoch rows).

    A seeded validation part of ``codes`` is held out (never trained on); training stops when
    the validation NLL has not improved for ``patience`` epochs and the best epoch's weights
    are restored. Rows report NLL in bits per token (the training value is the running mean
    over the epoch, dropout on).
    """
    from geovq.train import Diverged, Sums, on_device, split_train_val

    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise GeovqError(f"codes: expected (N, H, W), got {codes.shape}")
    if params["conditional"] and labels is None:
        raise GeovqError("a class-conditional prior needs the labels of its code grids")
    n_classes = int(np.max(labels)) + 1 if params["conditional"] else 0
    cfg = PriorConfig(
        K=int(K),
        grid=(int(codes.shape[1]), int(codes.shape[2])),
        n_classes=n_classes,
        n_layer=params["n_layer"],
        n_head=params["n_head"],
        n_embd=params["n_embd"],
        dropout=params["dropout"],
    )
    seq = check_codes(cfg, codes)
    y = _labels(labels) if params["conditional"] else None
    tr, va = split_train_val(len(seq), params["val_fraction"], seed)
    if len(tr) == 0 or len(va) == 0:
        raise GeovqError(
            f"prior: {len(seq)} code grids are too few for a train/validation split "
            f"(val_fraction={params['val_fraction']})"
        )
    if cfg.block_size == 1:
        log(
            f"one code per image (grid {cfg.grid}): the prior is a {'class-conditional ' if n_classes else ''}"
            f"categorical distribution over K={K} codes; the Transformer sees only the start token"
        )
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CodePrior(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"prior {asdict(cfg)}: {n_params / 1e6:.2f}M parameters; {len(tr)} train / {len(va)} validation grids "
        f"of {cfg.block_size} tokens; device {device}"
    )
    bs, epochs = params["batch_size"], params["epochs"]
    opt = _optimizer(model, params["lr"], params["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(epochs * math.ceil(len(tr) / bs)))
    train_seq, val_seq = on_device(seq[tr], device), seq[va]
    train_y = on_device(y[tr], device) if y is not None else None
    val_y = y[va].numpy() if y is not None else None
    best, best_state, bad, rows = math.inf, None, 0, []
    guard = Diverged("prior", epochs, params["lr"])
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        guard.epoch = epoch
        model.train()
        sums, n_tok = Sums(1, device), 0
        for idx in torch.randperm(len(train_seq), generator=gen).to(device).split(bs):
            x = train_seq[idx]
            logits = model(x, None if train_y is None else train_y[idx])
            loss = F.cross_entropy(logits.reshape(-1, cfg.K), x.reshape(-1))
            guard.check(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            sums.add(loss.detach().double() * x.numel())
            n_tok += x.numel()
        guard.flush()
        total = float(sums.numpy()[0])
        seconds = time.perf_counter() - t0
        val_bits, _ = nll_bits(model, val_seq.view(-1, *cfg.grid), val_y, device=device)
        guard.check(val_bits, "validation NLL (bits/token)")
        improved = val_bits < best - 1e-4
        if improved:
            best, best_state, bad = val_bits, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
        rows.append(
            {
                "epoch": epoch,
                "train_bits_per_token": total / n_tok / LN2,
                "val_bits_per_token": val_bits,
                "lr": opt.param_groups[0]["lr"],
                "tokens_per_s": n_tok / seconds,
                "seconds": seconds,
                "best": improved,
            }
        )
        log(
            f"epoch {epoch}/{epochs}: train {rows[-1]['train_bits_per_token']:.4f} bits/token, "
            f"val {val_bits:.4f} bits/token ({val_bits * cfg.block_size:.2f} bits/image); "
            f"{n_tok / seconds:,.0f} tokens/s; {seconds:.1f}s"
        )
        if bad >= params["patience"]:
            log(f"early stop: validation NLL has not improved for {bad} epochs")
            break
    model.load_state_dict(best_state)
    guard.check_model(model)
    log(f"best validation NLL {best:.4f} bits/token (epoch {max(r['epoch'] for r in rows if r['best'])})")
    return model.eval(), rows


# ---------------------------------------------------------------- sampling
@torch.no_grad()
def sample(model, n, *, labels=None, temperature=1.0, top_k=None, generator=None, batch_size=1024):
    """Draw ``n`` code grids (n, H, W) int64 in raster order (ancestral sampling).

    ``labels`` (n,) are required for a conditional prior. Draws use the CPU ``generator``
    (probabilities are moved to the CPU), so they follow the seed on any device.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    y = _labels(labels)
    model._check_labels(y, n)
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        yb = None if y is None else y[i : i + b].to(device)
        steps = model.next_logits(yb, batch=b)
        logits, seq = next(steps), []
        for t in range(cfg.block_size):
            logits = logits.float() / temperature
            if top_k is not None and top_k < cfg.K:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, -math.inf)
            probs = F.softmax(logits, dim=-1).cpu()  # drawn on the CPU generator: the same on any device
            nxt = torch.multinomial(probs, 1, generator=generator)
            seq.append(nxt)
            if t + 1 < cfg.block_size:
                logits = steps.send(nxt[:, 0].to(device))
        out.append(torch.cat(seq, dim=1))
    return torch.cat(out).view(n, *cfg.grid).numpy().astype(np.int64)


# ---------------------------------------------------------------- checkpoints
def save_prior(path, model, *, dataset, quantizer=None):
    cfg = asdict(model.config)
    cfg["grid"] = list(cfg["grid"])
    save_checkpoint(path, "prior", model, dataset=dataset, quantizer=quantizer, config=cfg)


def load_prior(path, device="cpu", dataset=None):
    """A CodePrior from its checkpoint, in eval mode; ``dataset`` if given must match the checkpoint's."""
    ck = load_checkpoint(path, "prior", dataset)
    cfg = dict(ck["config"])
    cfg["grid"] = tuple(cfg["grid"])
    return restore(ck, CodePrior(PriorConfig(**cfg)), device)
