"""The decoder made fast for Jacobian-vector products: rewritten for them (`for_jvp`), and
evaluated with the primal and all its tangents stacked into one batch (`Linearized`)."""

from __future__ import annotations

import copy
import operator
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from geovq.models import is_conv3x3_same


def owner_module(decode):
    """The nn.Module whose train/eval mode governs `decode` (itself, or a bound method's owner)."""
    if isinstance(decode, torch.nn.Module):
        return decode
    owner = getattr(decode, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


# --- the same decoder, rewritten for forward-mode AD ------------------------------------------


def _fold_batchnorm(conv, bn):
    """Conv2d or ConvTranspose2d followed by an eval-mode BatchNorm2d as one conv (the same affine map)."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    fused = copy.deepcopy(conv)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    shift = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
    if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out / groups, kh, kw), out = (group, j)
        g = conv.groups
        weight = (conv.weight.unflatten(0, (g, -1)) * scale.view(g, 1, -1, 1, 1)).flatten(0, 1)
    else:
        weight = conv.weight * scale[:, None, None, None]
    fused.weight = nn.Parameter(weight, requires_grad=False)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
    return fused


def _folds(conv, bn):
    """Whether `bn` after `conv` folds into it (_fold_batchnorm)."""
    return (
        isinstance(bn, nn.BatchNorm2d)
        and type(conv) in (nn.Conv2d, nn.ConvTranspose2d)
        and bn.track_running_stats
        and bn.running_var is not None
    )


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _UpsampleConv(nn.Module):
    """conv3x3(nearest-upsample-2x(x)) computed as one 3x3 conv on the small map with 4x the
    output channels, then a pixel shuffle: output pixel (2i + a, 2j + b) sees low-resolution rows
    {i-1: w0, i: w1 + w2} for a = 0 and {i: w0 + w1, i + 1: w2} for a = 1 (columns alike), so the
    same numbers come out without materializing the upsampled map, and the convolution runs on
    a quarter of the pixels with 4x the channels (the same FLOPs, a better GEMM shape). The conv's
    channels are phase-major, (a, b, o), so that in channels_last memory the shuffle moves runs
    of O contiguous floats (`shuffle`; faster than F.pixel_shuffle's (o, a, b) order, see
    benchmarks/README.md). Falls back to the original pair when the upsample is not exactly 2x
    for the input at hand."""

    def __init__(self, up, conv):
        super().__init__()
        self.up, self.conv = up, conv
        self._phase_cache = {}
        K, bias = self.phase_conv(1)
        self.phases = nn.Conv2d(conv.in_channels, K.shape[0], 3, padding=1, bias=bias is not None).to(K)
        self.phases.weight = nn.Parameter(K, requires_grad=False)
        if bias is not None:
            self.phases.bias = nn.Parameter(bias, requires_grad=False)

    @staticmethod
    def applies(up, conv):
        return (
            isinstance(up, nn.Upsample)
            and up.mode in ("nearest", "nearest-exact")
            and isinstance(conv, nn.Conv2d)
            and is_conv3x3_same(conv)
            and (up.size is not None or all(float(f) == 2.0 for f in _pair(up.scale_factor)))
        )

    def doubles(self, h, w):
        """Whether the upsample doubles an (h, w) input (else the original pair runs)."""
        if self.up.size is not None:
            return tuple(_pair(self.up.size)) == (2 * h, 2 * w)
        return True  # scale_factor 2, checked in applies()

    @staticmethod
    def shuffle(y, r=2):
        """(N, r²O, h, w) with channels (a, b, o) -> (N, O, rh, rw), pixel (ri + a, rj + b) from
        phase (a, b); the result is channels_last in memory."""
        N, C, h, w = y.shape
        t = y.permute(0, 2, 3, 1).reshape(N, h, w, r, r, C // (r * r))
        return t.permute(0, 1, 3, 2, 4, 5).reshape(N, r * h, r * w, C // (r * r)).permute(0, 3, 1, 2)

    def phase_conv(self, r):
        """(weight, bias) of the 3x3 conv on the coarse grid that maps an input held as r x r
        phases, (N, r²I, h, w) standing for (N, I, rh, rw), to this module's output held as
        2r x 2r phases, (N, 4r²O, h, w). Fine output row 2r·i + p reads upsampled rows p + d,
        d in {-1, 0, 1}, i.e. input rows f = floor((p + d) / 2) of the r-fold map: coarse row
        i + floor(f / r), phase f mod r (columns alike). r = 1 is `phases`."""
        W = self.conv.weight.detach()
        key = (r, W.dtype, W.device)  # a module moved or cast since builds afresh
        if key not in self._phase_cache:
            dtype = W.dtype
            if W.dtype.itemsize < 4:  # summed in float32, rounded once (bfloat16, half)
                W = W.float()
            O, I = W.shape[:2]
            R = 2 * r
            K = W.new_zeros(R, R, O, r, r, I, 3, 3)
            for pa in range(R):
                for pb in range(R):
                    for dy in (-1, 0, 1):
                        fa = (pa + dy) // 2
                        for dx in (-1, 0, 1):
                            fb = (pb + dx) // 2
                            K[pa, pb, :, fa % r, fb % r, :, fa // r + 1, fb // r + 1] += W[:, :, dy + 1, dx + 1]
            bias = self.conv.bias.detach().repeat(R * R) if self.conv.bias is not None else None
            self._phase_cache[key] = (K.reshape(R * R * O, r * r * I, 3, 3).to(dtype), bias)
        return self._phase_cache[key]

    def forward(self, x):
        if self.doubles(*x.shape[-2:]):
            return self.shuffle(self.phases(x))
        return self.conv(self.up(x))


def _rewrite(seq):
    """The children of an nn.Sequential with BN folded into the convs, then upsample + conv fused."""
    folded = []
    for m in seq:
        if folded and _folds(folded[-1], m):
            folded[-1] = _fold_batchnorm(folded[-1], m)
        else:
            folded.append(m)
    out, i = [], 0
    while i < len(folded):
        nxt = folded[i + 1] if i + 1 < len(folded) else None
        if _UpsampleConv.applies(folded[i], nxt):
            out.append(_UpsampleConv(folded[i], nxt))
            i += 2
        else:
            out.append(folded[i])
            i += 1
    return out


def _fusable(module):
    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            mods = list(seq)
            for m, nxt in zip(mods, mods[1:]):
                if _folds(m, nxt) or _UpsampleConv.applies(m, nxt):
                    return True
    return False


def for_jvp(decode):
    """`decode` computing the same function, rewritten for fast forward-mode AD in eval mode.

    In every nn.Sequential of the decoder's module: Conv2d or ConvTranspose2d + BatchNorm2d
    (running statistics, i.e. eval mode) become one conv, and nearest 2x Upsample + 3x3 conv
    become one conv on the small map + a pixel shuffle (`_UpsampleConv`). Outputs agree to float32 rounding
    (tests/test_riemann.py, tests/test_jvp.py). Works on a deep copy; returns `decode` itself when
    there is nothing to rewrite or no module behind it. Only for eval-mode use: BatchNorm is
    folded with its running statistics. Speed-ups: benchmarks/README.md (bench_riemann.py)."""
    module = owner_module(decode)
    if module is None or not _fusable(module):
        return decode
    fused = copy.deepcopy(module).eval()
    for seq in list(fused.modules()):
        if isinstance(seq, nn.Sequential):
            new = _rewrite(seq)
            for name in list(seq._modules):
                del seq._modules[name]
            for j, m in enumerate(new):
                seq.add_module(str(j), m)
    return fused if decode is module else types.MethodType(decode.__func__, fused)


def cast(decode, dtype):
    """`decode` on a copy of its module with floating-point parameters and buffers in `dtype`
    (`decode` itself when they already are, or when no module is behind it)."""
    module = owner_module(decode)
    if module is None or all(t.dtype == dtype for t in module.state_dict().values() if t.is_floating_point()):
        return decode
    copied = copy.deepcopy(module).to(dtype)
    return copied if decode is module else types.MethodType(decode.__func__, copied)


# --- primal and tangents as one batch ----------------------------------------------------------
#
# A feed-forward decoder made of affine maps (Linear, Conv, ConvTranspose, eval BatchNorm),
# linear reshapes and resamplings (nearest, bilinear, ...), pointwise nonlinearities and
# GroupNorm has a simple forward mode: stack the primal batch and its tangents along dim 0 into
# blocks [z; t_1; ...; t_T] and run every linear map on the whole stack (the bias only on the
# primal block), every pointwise f as f on the primal block and multiplication by f'(primal) on
# the tangent blocks, GroupNorm by its derivative at the primal's statistics. Each layer is then one
# large call - the cost of a plain forward pass over (1 + T) x B inputs - where torch.func's
# forward-mode AD runs separate primal and tangent calls and, for a convolution, an extra
# convolution with a zero weight tangent and an add. Anything else is refused (`Unsupported`),
# never approximated: cell_metrics then falls back to torch.func.


class Unsupported(ValueError):
    """The decoder does something Linearized has no rule for."""


class _Stack:
    """The layout of a stack along dim 0: rows [0, U) the primal inputs, then T tangent blocks of
    B rows each; tangent row b of every block belongs to primal row owner[b], so that several
    tangents share one primal (owner None: B = U and row b belongs to primal row b)."""

    __slots__ = ("U", "T", "B", "owner")

    def __init__(self, n, blocks, owner=None):
        if owner is None:
            if n % blocks:
                raise ValueError(f"stack of {n} is not {blocks} equal blocks")
            self.U = self.B = n // blocks
        else:
            self.B = len(owner)
            self.U = n - (blocks - 1) * self.B
            if self.U < 1:
                raise ValueError(f"stack of {n} leaves no primal rows for {blocks - 1} tangent blocks of {self.B}")
        self.T, self.owner = blocks - 1, owner

    def tangents(self, y):
        """The tangent rows of y as (T, B, ...) (a view)."""
        return y[self.U :].unflatten(0, (self.T, self.B))

    def at_tangents(self, p):
        """A per-primal quantity (U, ...) for the tangent rows of one block (B, ...)."""
        return p if self.owner is None else p[self.owner]


def _relu(p):
    return None, (p > 0).to(p.dtype)


def _leaky(slope):
    # the slope in p's dtype (torch.where of two Python floats would round it to float32)
    return lambda p: (None, torch.where(p > 0, 1.0, p.new_full((), slope)))


def _sigmoid(p):
    s = torch.sigmoid(p)
    return s, s * (1 - s)


def _tanh(p):
    t = torch.tanh(p)
    return t, 1 - t * t


def _softplus(beta, threshold):
    def rule(p):
        bp = beta * p
        return F.softplus(p, beta, threshold), torch.where(bp > threshold, 1.0, torch.sigmoid(bp)).to(p.dtype)

    return rule


def _elu(alpha):
    # f'(0) = alpha, as torch's elu_backward
    return lambda p: (F.elu(p, alpha), torch.where(p > 0, 1.0, alpha * torch.exp(p)))


def _silu(p):
    s = torch.sigmoid(p)
    return F.silu(p), s * (1 + p * (1 - s))


def _gelu(approximate):
    if approximate == "none":  # x Φ(x): Φ(x) + x φ(x)

        def rule(p):
            cdf = 0.5 * (1 + torch.erf(p * 0.5**0.5))
            return F.gelu(p), cdf + p * torch.exp(-0.5 * p * p) * (2 * torch.pi) ** -0.5

    elif approximate == "tanh":  # x (1 + tanh u) / 2, u = k (x + c x³)

        def rule(p):
            k, c = (2 / torch.pi) ** 0.5, 0.044715
            th = torch.tanh(k * (p + c * p * p * p))
            return F.gelu(p, approximate="tanh"), 0.5 * (1 + th) + 0.5 * p * (1 - th * th) * k * (1 + 3 * c * p * p)

    else:
        raise Unsupported(f"GELU approximate={approximate!r}")
    return rule


def _arg(args, kwargs, i, name, default):
    """Argument `name` of a call, given at position i or by keyword."""
    return args[i] if len(args) > i else kwargs.get(name, default)


# pointwise f: rule(primal) -> (f(primal), f'(primal)); f(primal) None when f is positively
# homogeneous (f(p) = f'(p) p), so one multiplication serves every block. Functions map the
# call's (args, kwargs) to their rule.
_POINTWISE_FUNCTIONS = {
    **dict.fromkeys((torch.relu, F.relu), lambda a, k: _relu),
    **dict.fromkeys((torch.sigmoid, F.sigmoid), lambda a, k: _sigmoid),
    **dict.fromkeys((torch.tanh, F.tanh), lambda a, k: _tanh),
    F.silu: lambda a, k: _silu,
    F.leaky_relu: lambda a, k: _leaky(_arg(a, k, 1, "negative_slope", 0.01)),
    F.softplus: lambda a, k: _softplus(_arg(a, k, 1, "beta", 1.0), _arg(a, k, 2, "threshold", 20.0)),
    F.elu: lambda a, k: _elu(_arg(a, k, 1, "alpha", 1.0)),
    F.gelu: lambda a, k: _gelu(_arg(a, k, 1, "approximate", "none")),
}
_POINTWISE_METHODS = {"relu": _relu, "sigmoid": _sigmoid, "tanh": _tanh}
# linear maps that act on each batch element alike: applied to the whole stack as they are
_LINEAR_MODULES = (nn.Upsample, nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.PixelShuffle, nn.ZeroPad2d)
_LINEAR_FUNCTIONS = {torch.flatten, torch.reshape, F.interpolate, F.pixel_shuffle}
_LINEAR_METHODS = {"view", "reshape", "flatten", "unflatten", "contiguous", "permute"}
# shape queries on a stacked tensor: evaluated as they are (the batch size they see is the stack's)
_SHAPE_ACCESS = {"shape", "dtype", "device", "ndim"}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, _UpsampleConv) or super().is_leaf_module(m, qualname)


class _Root(nn.Module):
    """A bound `decode` method as a module's forward, so torch.fx can trace it."""

    def __init__(self, owner, fn):
        super().__init__()
        self.owner, self.fn = owner, fn

    def forward(self, z):
        return self.fn(z)


def _add_bias(y, bias, S):
    if bias is not None:
        y[: S.U] += bias.view(-1, *([1] * (y.ndim - 2)))
    return y


_CONV_TRANSPOSE = {
    nn.ConvTranspose1d: F.conv_transpose1d,
    nn.ConvTranspose2d: F.conv_transpose2d,
    nn.ConvTranspose3d: F.conv_transpose3d,
}


def _affine(m, x, S, output_size=None):
    """Linear / Conv / ConvTranspose / eval BatchNorm on a stack: the linear part on every block,
    the offset on the primal block only. None for other modules. output_size: ConvTranspose's
    forward argument (its output padding, as its forward pass computes it)."""
    if type(m) is nn.Linear:
        return _add_bias(F.linear(x, m.weight), m.bias, S)
    if type(m) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return _add_bias(m._conv_forward(x, m.weight, None), m.bias, S)
    if type(m) in _CONV_TRANSPOSE:
        d = len(m.kernel_size)
        pad = m._output_padding(x, output_size, m.stride, m.padding, m.kernel_size, d, m.dilation)
        y = _CONV_TRANSPOSE[type(m)](x, m.weight, None, m.stride, m.padding, pad, m.groups, m.dilation)
        return _add_bias(y, m.bias, S)
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training and m.running_var is not None:
        scale = torch.rsqrt(m.running_var + m.eps)
        if m.weight is not None:
            scale = scale * m.weight
        shift = -m.running_mean * scale + (m.bias if m.bias is not None else 0)
        return _add_bias(x * scale.view(-1, *([1] * (x.ndim - 2))), shift, S)
    return None


def _group_norm(x, groups, weight, bias, eps, S):
    """GroupNorm on a stack (layout S). Not affine in its input: each sample's groups are
    normalized by their own statistics. The primal rows run as they are; a tangent t of a group
    whose primal x has mean μ and σ = sqrt(biased variance + eps), x̂ = (x - μ) / σ, maps to
    (t - mean(t) - x̂ mean(x̂ t)) / σ times the weight (means over the group's channels and
    pixels, per sample): the derivative of x̂, as dμ = mean(t) and dσ = mean(x̂ t)."""
    out = torch.empty_like(x)  # in x's memory format
    out[: S.U] = F.group_norm(x[: S.U], groups, weight, bias, eps)
    p = x[: S.U].unflatten(1, (groups, -1))  # (U, G, C / G, *spatial): a view in any layout
    dims = tuple(range(2, p.ndim))
    var, mean = torch.var_mean(p, dim=dims, correction=0, keepdim=True)
    rstd = torch.rsqrt(var + eps)
    xhat, rstd = S.at_tangents((p - mean) * rstd), S.at_tangents(rstd)
    t = S.tangents(x).unflatten(2, (groups, -1))  # (T, B, G, C / G, *spatial)
    dims = tuple(range(3, t.ndim))
    dt = (t - t.mean(dims, keepdim=True) - xhat * (xhat * t).mean(dims, keepdim=True)) * rstd
    if weight is not None:
        dt = dt * weight.view(groups, -1, *([1] * (x.ndim - 2)))
    out[S.U :] = dt.flatten(0, 1).flatten(1, 2)
    return out


class _Phased:
    """A stacked map held as r x r phases on its coarse grid: t (N, r²O, h, w) stands for
    (N, O, rh, rw) (`_UpsampleConv.shuffle(t, r)`). Pointwise rules apply to it as it is."""

    __slots__ = ("t", "r")

    def __init__(self, t, r):
        self.t, self.r = t, r

    def full(self):
        return _UpsampleConv.shuffle(self.t, self.r)


# An _UpsampleConv whose input is held as 2 x 2 phases runs as one conv on the coarse grid
# (4x its FLOPs) when its phase conv would have at most this many output channels: such a
# narrow conv on the fine map runs far below the wide coarse one's rate, and the coarse one
# also spares shuffling the large input map (measured: benchmarks/README.md).
_NARROW = 16


def _upsample_conv(m, x, S):
    """An _UpsampleConv on a stack; its output held as phases (_Phased) where it doubles."""
    if isinstance(x, _Phased):
        h, w = x.t.shape[-2:]
        if x.r == 2 and 4 * m.conv.out_channels <= _NARROW and m.doubles(2 * h, 2 * w):
            W, b = m.phase_conv(2)
            return _Phased(_add_bias(F.conv2d(x.t, W, None, padding=1), b, S), 4)
        x = x.full()
    if m.doubles(*x.shape[-2:]):
        return _Phased(_affine(m.phases, x, S), 2)
    return _affine(m.conv, m.up(x), S)


def _pointwise(rule, y, S, in_place):
    if isinstance(y, _Phased):  # pointwise maps commute with the phase layout
        return _Phased(_pointwise(rule, y.t, S, in_place), y.r)
    primal = y[: S.U]
    f, df = rule(primal)
    if S.owner is None:  # equal blocks: one multiplication over the whole stack
        if in_place:
            out = y.unflatten(0, (1 + S.T, S.U)).mul_(df)
        else:
            out = y.unflatten(0, (1 + S.T, S.U)) * df
        if f is not None:
            out[0] = f
        return out.flatten(0, 1)
    out = y if in_place else torch.empty_like(y)  # in y's memory format
    if in_place:
        S.tangents(y).mul_(S.at_tangents(df))
    else:
        torch.mul(S.tangents(y), S.at_tangents(df), out=S.tangents(out))
    out[: S.U] = f if f is not None else primal * df
    return out


def _module_rule(m):
    if isinstance(m, nn.ReLU):
        return _relu
    if isinstance(m, nn.LeakyReLU):
        return _leaky(m.negative_slope)
    if isinstance(m, nn.Sigmoid):
        return _sigmoid
    if isinstance(m, nn.Tanh):
        return _tanh
    if isinstance(m, nn.Softplus):
        return _softplus(m.beta, m.threshold)
    if isinstance(m, nn.ELU):
        return _elu(m.alpha)
    if isinstance(m, nn.SiLU):
        return _silu
    if isinstance(m, nn.GELU):
        return _gelu(m.approximate)
    return None


class Linearized:
    """`decode` traced once by torch.fx; `self(x, blocks)` evaluates it on a stack of `blocks`
    equal-sized blocks along dim 0, the first the primal inputs z, the others tangents t, and
    returns the stack [decode(z); J(z) t_1; ...]. Exact (the same operations as a forward pass).
    Raises Unsupported, naming the operation, for a decoder outside the rules above: when it is
    built (an operation without a rule; data-dependent control flow, which torch.fx cannot
    trace), or when run, for what shows only on real tensors (a reshape across the batch
    dimension, indexing a tensor, a product of two input-dependent tensors). Eval mode only:
    BatchNorm uses its running statistics, Dropout is the identity; trace it in eval mode, as
    torch.fx records the Python branches taken.
    """

    def __init__(self, decode):
        module = owner_module(decode)
        if module is None:
            raise Unsupported("decode has no nn.Module behind it")
        root = module if decode is module else _Root(module, decode)
        try:
            self.graph = _Tracer().trace(root)
        except Exception as e:  # torch.fx raises assorted types for untraceable code
            raise Unsupported(f"torch.fx cannot trace the decoder: {type(e).__name__}: {e}") from e
        self.root = root
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise Unsupported(f"decode takes {len(placeholders)} inputs, expected one")
        for node in self.graph.nodes:
            self._check(node)

    def _check(self, node):
        if node.op == "call_module":
            m = self.root.get_submodule(node.target)
            ok = (
                isinstance(m, _LINEAR_MODULES)
                or _module_rule(m) is not None
                or isinstance(m, _UpsampleConv)
                or type(m) in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, *_CONV_TRANSPOSE)
                or (isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None)
                or isinstance(m, nn.GroupNorm)
            )
            if isinstance(m, (nn.Flatten, nn.Unflatten)) and getattr(m, "start_dim", getattr(m, "dim", 1)) == 0:
                ok = False
        elif node.op == "call_function":
            ok = (
                node.target in _POINTWISE_FUNCTIONS
                or node.target in _LINEAR_FUNCTIONS
                or node.target
                in (F.group_norm, operator.add, operator.mul, operator.truediv, operator.getitem, torch.add)
                or (node.target is getattr and node.args[1] in _SHAPE_ACCESS)
            )
        elif node.op == "call_method":
            ok = node.target in _POINTWISE_METHODS or node.target in _LINEAR_METHODS or node.target in ("size", "dim")
        else:
            ok = node.op in ("placeholder", "output", "get_attr")
        if not ok:
            raise Unsupported(f"no forward-mode rule for {node.op} {node.target}")

    def _phase_aware(self, node):
        """Nodes that take an input held as phases (_Phased) as it is."""
        if node.op == "call_module":
            m = self.root.get_submodule(node.target)
            return isinstance(m, _UpsampleConv) or _module_rule(m) is not None
        if node.op == "call_method":
            return node.target in _POINTWISE_METHODS
        return node.op == "call_function" and node.target in _POINTWISE_FUNCTIONS

    def __call__(self, x, blocks, pixel_order=True, owner=None):
        """pixel_order=False: the output's elements may come permuted within each sample
        (the same permutation for all), which spares the last shuffle of a phase layout; for
        quantities invariant under it, such as JᵀJ.

        owner: None, or a (B,) index tensor on x's device for a stack that shares primals: then
        x holds U primal inputs followed by blocks - 1 tangent blocks of B rows each, tangent
        row b of every block taken at primal owner[b] (say, the cells of one image share its
        decoded image), and the output is [decode(z) (U); J(z[owner]) t_1 (B); ...]."""
        n = x.shape[0]
        S = _Stack(n, blocks, owner)
        # fresh: stacked values in a tensor of their own (not views of another node's), which a
        # pointwise rule may overwrite when it is their only user
        env, stacked, fresh = {}, set(), set()

        def full(v):
            return v.full() if isinstance(v, _Phased) else v

        out = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env[node], _ = x, stacked.add(node)
                continue
            keep = self._phase_aware(node) or (node.op == "output" and not pixel_order)
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda nd: env[nd] if keep else full(env[nd]))
            if node.op == "output":
                if node.args[0] not in stacked:
                    raise Unsupported("the decoder's output does not depend on its input")
                out = args[0].t if isinstance(args[0], _Phased) else args[0]
                break
            if node.op == "get_attr":
                env[node] = operator.attrgetter(node.target)(self.root)
                continue
            inputs = [a for a in node.all_input_nodes if a in stacked]
            if not inputs:  # constants and shape arithmetic
                env[node] = self._plain(node, args, kwargs)
                continue
            y = self._stacked(node, args, kwargs, inputs, S, fresh)
            if isinstance(y, (torch.Tensor, _Phased)):
                m = y.t.shape[0] if isinstance(y, _Phased) else (y.shape[0] if y.ndim else None)
                if m != n:
                    raise Unsupported(
                        f"{node.op} {node.target} mixes the batch dimension "
                        f"({tuple(x.shape)} -> {tuple(full(y).shape)})"
                    )
                stacked.add(node)
            env[node] = y
        return out

    def _plain(self, node, args, kwargs):
        if node.op == "call_module":
            return self.root.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)

    def _stacked(self, node, args, kwargs, inputs, S, fresh):
        in_place = inputs[0] in fresh and len(inputs[0].users) == 1
        t = node.target
        if node.op == "call_module":
            m = self.root.get_submodule(t)
            if isinstance(m, _UpsampleConv):
                fresh.add(node)
                return _upsample_conv(m, args[0], S)
            if isinstance(m, nn.GroupNorm):
                fresh.add(node)
                return _group_norm(args[0], m.num_groups, m.weight, m.bias, m.eps, S)
            y = _affine(m, args[0], S, _arg(args, kwargs, 1, "output_size", None))
            rule = _module_rule(m)
            if y is not None or rule is not None:
                fresh.add(node)
                return y if y is not None else _pointwise(rule, args[0], S, in_place)
            if m.training and isinstance(m, nn.Dropout):
                raise Unsupported(f"{t}: Dropout in training mode")
            if isinstance(m, (nn.Dropout, nn.Identity)):
                return args[0]
            if isinstance(m, _LINEAR_MODULES):
                return m(*args, **kwargs)
            raise Unsupported(f"no forward-mode rule for {t} ({type(m).__name__}, training={m.training})")
        if node.op == "call_method":
            if t in _POINTWISE_METHODS:
                fresh.add(node)
                return _pointwise(_POINTWISE_METHODS[t], args[0], S, in_place)
            if t in ("size", "dim"):
                return getattr(args[0], t)(*args[1:], **kwargs)
            if t == "permute":
                dims = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list)) else args[1:]
                if dims[0] != 0:
                    raise Unsupported("permute moves the batch dimension")
            return getattr(args[0], t)(*args[1:], **kwargs)
        # call_function
        if t is getattr or t is operator.getitem:
            if t is operator.getitem and isinstance(args[0], torch.Tensor):
                raise Unsupported("indexing a tensor that depends on the input")
            return t(*args, **kwargs)
        if t in _POINTWISE_FUNCTIONS:
            fresh.add(node)
            return _pointwise(_POINTWISE_FUNCTIONS[t](args, kwargs), args[0], S, in_place)
        if t is F.group_norm:
            if inputs != list(node.args[:1]):
                raise Unsupported("F.group_norm with an input-dependent weight or bias")
            fresh.add(node)
            weight, bias = _arg(args, kwargs, 2, "weight", None), _arg(args, kwargs, 3, "bias", None)
            groups, eps = _arg(args, kwargs, 1, "num_groups", None), _arg(args, kwargs, 4, "eps", 1e-5)
            return _group_norm(args[0], groups, weight, bias, eps, S)
        if t in _LINEAR_FUNCTIONS:
            if t is torch.flatten and (args[1] if len(args) > 1 else kwargs.get("start_dim", 0)) == 0:
                raise Unsupported("torch.flatten over the batch dimension")
            return t(*args, **kwargs)
        a, b = args[0], args[1]
        if t in (operator.add, torch.add) and not kwargs:
            if len(inputs) == 2:
                return a + b  # both stacked: the sum of linearizations
            y, c = (a, b) if node.args[0] in inputs else (b, a)
            y = y.clone()
            y[: S.U] += c  # a constant offset: the primal rows only
            return y
        if (
            t in (operator.mul, operator.truediv)
            and len(inputs) == 1
            and node.args[0] in inputs
            and isinstance(b, (int, float))
        ):
            return t(a, b)
        if t is operator.mul and len(inputs) == 1 and node.args[1] in inputs and isinstance(a, (int, float)):
            return a * b
        raise Unsupported(f"no forward-mode rule for {t} with these arguments")


# --- which output pixels a latent cell can reach ----------------------------------------------
#
# A convolutional decoder's Jacobian is sparse: cell (h, w) of the latent grid moves only the
# output pixels in its receptive field. Cells whose fields do not overlap can share one tangent
# (Curtis, Powell & Reid 1974, "On the estimation of sparse Jacobian matrices"): J (e_a + e_b)
# restricted to a's field is J e_a, exactly, so one decoder pass serves them all. The fields are
# found structurally, by pushing each cell's indicator through the traced graph with every
# convolution's kernel replaced by ones: a superset of where J e_(h, w) is nonzero at any input
# (a weight that is exactly zero, or a ReLU that is off, only shrinks the true support).
# Exact in exact arithmetic; in floating point a convolution algorithm that mixes a tile's values
# (Winograd, FFT: some oneDNN and cuDNN kernels) can leave rounding-level traces of a
# neighbour's tangent inside a cell's field: of the order of eps x |J e_neighbour|.


def _spread(x, kernel, stride, padding, dilation):
    """Where a convolution with this geometry can carry a nonnegative indicator x (N, 1, H, W)."""
    ones = x.new_ones(1, 1, *kernel)
    return F.conv2d(x, ones, None, stride, padding, dilation)


def _support_module(m, x, kwargs):
    if isinstance(m, _UpsampleConv):
        return _spread(m.up(x), (3, 3), 1, 1, 1)
    if type(m) is nn.Conv2d and m.padding_mode == "zeros":
        return _spread(x, m.kernel_size, m.stride, m.padding, m.dilation)
    if type(m) is nn.ConvTranspose2d and m.padding_mode == "zeros" and "output_size" not in kwargs:
        ones = x.new_ones(1, 1, *m.kernel_size)
        return F.conv_transpose2d(x, ones, None, m.stride, m.padding, m.output_padding, 1, m.dilation)
    if isinstance(m, nn.Upsample) and m.mode in ("nearest", "nearest-exact", "bilinear"):
        return m(x)  # nonnegative interpolation weights: a superset, never a cancellation
    if _module_rule(m) is not None or isinstance(m, (nn.Identity, nn.Dropout)):
        return x
    if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.training and m.running_var is not None:
        return x  # per-channel affine
    return None


def cell_supports(lin, grid):
    """(H·W, Ho, Wo) bool: for each cell of an (H, W) latent grid (row-major), the output pixels
    its C-vector can move through the decoder traced by `lin` (a Linearized), whatever the input
    (see above); every output channel alike. None when the graph does something without a rule
    here (a Linear, a normalization over space, a reshape, ...): then every pixel may depend on
    every cell."""
    H, W = grid
    n = H * W
    x = torch.zeros(n, 1, H, W, dtype=torch.float64)
    x.view(n, -1)[torch.arange(n), torch.arange(n)] = 1
    env = {}
    for node in lin.graph.nodes:
        if node.op == "placeholder":
            env[node] = x
            continue
        if node.op == "output":
            y = env.get(node.args[0]) if isinstance(node.args[0], fx.Node) else None
            if y is None or y.ndim != 4:
                return None
            return y[:, 0] > 0
        ins = node.all_input_nodes
        if len(ins) == 0 or any(a not in env for a in ins) or not isinstance(node.args[0], fx.Node):
            return None  # constants, parameters used directly, shape arithmetic: no rule here
        a = env[node.args[0]]
        t = node.target
        if node.op == "call_module":
            y = _support_module(lin.root.get_submodule(t), a, node.kwargs) if len(node.args) == 1 else None
        elif node.op == "call_method":
            y = a if (t in _POINTWISE_METHODS or t == "contiguous") and len(node.args) == 1 else None
        elif t in _POINTWISE_FUNCTIONS:
            y = a if len(ins) == 1 else None
        elif t in (operator.add, torch.add) and not node.kwargs:
            b = node.args[1]
            y = torch.maximum(a, env[b]) if isinstance(b, fx.Node) else a  # a sum, or a constant offset
        elif t in (operator.mul, operator.truediv) and len(ins) == 1 and isinstance(node.args[1], (int, float)):
            y = a
        else:
            y = None
        if y is None or y.ndim != 4:
            return None
        env[node] = (y > 0).to(x.dtype)
    return None


# Grids of more cells are not coloured: cell_supports holds a float64 map of the output per cell
# (a 32 x 32 grid decoded to 256 x 256: 0.5 GB).
MAX_COLORED_CELLS = 1024


class Coloring:
    """A partition of a latent grid's cells into colours whose output supports (cell_supports)
    are pairwise disjoint, found greedily in row-major order. colors (H·W,) long; masks (H·W, Ho,
    Wo) bool; n_colors."""

    def __init__(self, supports):
        n = supports.shape[0]
        flat = supports.reshape(n, -1).double()
        overlap = ((flat @ flat.T) > 0).numpy()
        colors = np.zeros(n, dtype=np.int64)
        for i in range(1, n):
            free = np.ones(i + 1, dtype=bool)
            free[colors[:i][overlap[i, :i]]] = False
            colors[i] = np.flatnonzero(free)[0]
        self.colors = torch.from_numpy(colors)
        self.masks = supports
        self.n_colors = int(colors.max()) + 1
        self._pixel_masks = {}

    @classmethod
    def of(cls, lin, grid):
        """The colouring of `lin`'s grid, or None when it would not merge any cells."""
        if grid[0] * grid[1] > MAX_COLORED_CELLS:
            return None
        sup = cell_supports(lin, grid)
        if sup is None:
            return None
        c = cls(sup)
        return c if c.n_colors < len(c.colors) else None

    def pixel_masks(self, shape, channels_last, dtype, device):
        """(H·W, P) 0/1 masks in `dtype` over a decoded image of `shape` flattened: (Co, Ho, Wo),
        or (Ho, Wo, Co) when channels_last (its memory order)."""
        key = (tuple(shape), channels_last, dtype, device)
        if key not in self._pixel_masks:
            Ho, Wo, Co = shape if channels_last else (*shape[1:], shape[0])
            if tuple(self.masks.shape[1:]) != (Ho, Wo):
                raise ValueError(
                    f"decoded images {tuple(shape)} do not match the supports' {tuple(self.masks.shape[1:])}"
                )
            m = self.masks.to(device=device, dtype=dtype)
            m = m[:, :, :, None].expand(-1, Ho, Wo, Co) if channels_last else m[:, None].expand(-1, Co, Ho, Wo)
            self._pixel_masks[key] = m.reshape(len(m), -1)
        return self._pixel_masks[key]
