"""Linearized (the stacked forward-mode pass) against torch.func.jvp and reverse-mode Jacobians; its refusals."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import jvp

from geovq.jvp import Coloring, Linearized, Unsupported, _UpsampleConv, cell_supports, for_jvp
from geovq.models import SpatialVAE, VanillaVAE
from geovq.riemann import cell_metrics
from test_riemann import _randomize_bn

# torch's forward-mode AD scripts its jvp decompositions on first use (torch-internal)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


def _reference(decode, z, tangents):
    """decode(z) and J t for each tangent by torch.func.jvp, in float64."""
    outs = [jvp(decode, (z,), (t,)) for t in tangents]
    return outs[0][0], torch.stack([o[1] for o in outs])


def _check_stacked(decode, z, n_tan=3, seed=0, channels_last=False, atol=1e-9):
    """Linearized(decode) on [z; t_1..t_T] equals torch.func.jvp in float64."""
    g = torch.Generator().manual_seed(seed)
    tangents = torch.randn(n_tan, *z.shape, generator=g, dtype=z.dtype)
    with torch.no_grad():
        lin = Linearized(decode)
        x = torch.cat([z[None], tangents]).flatten(0, 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = lin(x, 1 + n_tan)
    f_ref, t_ref = _reference(decode, z, tangents)
    out = out.unflatten(0, (1 + n_tan, z.shape[0]))
    torch.testing.assert_close(out[0], f_ref, rtol=0, atol=atol)
    torch.testing.assert_close(out[1:], t_ref, rtol=0, atol=atol)
    return lin


@pytest.mark.parametrize(
    "grid,image,channels,colours",
    [(4, 28, (4, 6, 5), 1), (7, 28, (4, 6), 1), (2, 16, (4, 6, 5), 1), (4, 32, (3, 5, 4), 1), (8, 32, (4, 6), 3)],
)
@pytest.mark.parametrize("rewritten", [True, False])
def test_spatial_decoders(grid, image, channels, colours, rewritten):
    """The pipeline's spatial decoder, as given (BatchNorm, Upsample + conv) and rewritten by
    for_jvp (folded BN; upsample + conv as phase convs, chained across ReLU where narrow; 4 -> 7
    is not 2x; 2 -> 4 -> 8 -> 16 chains phases 2 -> 4, then starts over; 8 -> 32 with 3 colour
    channels, config/cifar10.yaml's grid)."""
    torch.manual_seed(grid + image)
    vae = SpatialVAE((colours, image, image), latent_channels=3, grid=grid, channels=channels).double()
    _randomize_bn(vae, seed=4)
    vae.eval()
    decode = for_jvp(vae.decode) if rewritten else vae.decode
    z = torch.randn(5, 3, grid, grid, dtype=torch.float64)
    for channels_last in (False, True):
        _check_stacked(decode, z, channels_last=channels_last)


def test_vanilla_decoder():
    torch.manual_seed(0)
    vae = VanillaVAE((1, 6, 5), latent_dim=4, hidden=12).double().eval()
    _check_stacked(vae.decode, torch.randn(7, 4, 1, 1, dtype=torch.float64))


class _Mixed(nn.Module):
    """Every rule at once: unfolded BN, a residual (a value with two users, so no rule may
    overwrite it), a constant offset, scalar scaling, pointwise functions and methods, reshapes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.lin = nn.Linear(4 * 9, 10)
        self.offset = nn.Parameter(torch.randn(4, 1, 1))
        self.act = nn.LeakyReLU(0.2)
        self.soft = nn.Softplus(beta=2.0, threshold=1.0)

    def forward(self, z):
        y = self.bn(self.conv(z))
        y = F.relu(y) + y  # y has two users
        y = self.act(y + self.offset) * 0.5
        y = torch.tanh(y).flatten(1)
        y = self.soft(self.lin(y)).view(z.shape[0], 2, 5)
        return F.softplus(y, beta=1.5).sigmoid() + 2.0 * y / 3.0


def test_all_rules_against_torch_func():
    torch.manual_seed(1)
    net = _Mixed().double()
    _randomize_bn(net, seed=5)
    net.eval()
    _check_stacked(net, torch.randn(6, 2, 3, 3, dtype=torch.float64), n_tan=4)


@pytest.mark.parametrize("r", [1, 2, 3])
def test_phase_conv_equals_upsample_then_conv(r):
    """An input held as r x r phases, through the coarse-grid phase conv, gives this module's
    output on the full map held as 2r x 2r phases."""
    torch.manual_seed(r)
    up, conv = nn.Upsample(scale_factor=2), nn.Conv2d(3, 2, 3, padding=1)
    m = _UpsampleConv(up, conv).double()
    full_in = torch.randn(4, 3, 5 * r, 6 * r, dtype=torch.float64)
    phased_in = full_in.unflatten(2, (5, r)).unflatten(4, (6, r)).permute(0, 3, 5, 1, 2, 4).reshape(4, r * r * 3, 5, 6)
    assert torch.equal(_UpsampleConv.shuffle(phased_in, r), full_in)
    W, b = m.phase_conv(r)
    with torch.no_grad():
        out = _UpsampleConv.shuffle(F.conv2d(phased_in, W.double(), b.double(), padding=1), 2 * r)
        torch.testing.assert_close(out, conv(up(full_in)).double(), rtol=0, atol=1e-12)


def test_output_in_phase_order_is_a_permutation():
    """pixel_order=False may leave the output in phase order: per sample the same values."""
    torch.manual_seed(2)
    vae = SpatialVAE((1, 28, 28), latent_channels=3, grid=7, channels=(4, 6)).double().eval()
    decode = for_jvp(vae.decode)
    z = torch.randn(3, 3, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        lin = Linearized(decode)
        a, b = lin(z, 1), lin(z, 1, pixel_order=False)
    assert a.shape == (3, 1, 28, 28) and b.shape == (3, 16, 7, 7)  # phases 4 x 4 of a 7 x 7 grid
    torch.testing.assert_close(a, vae.decode(z), rtol=0, atol=1e-12)
    assert not torch.equal(a.flatten(1), b.flatten(1))
    torch.testing.assert_close(a.flatten(1).sort(1).values, b.flatten(1).sort(1).values, rtol=0, atol=0)


# --- the layers of the decoders researchers bring, against reverse-mode Jacobians ----------------


def _check_reverse_mode(decode, Z, n_tan=3, fuse=True, atol=1e-9):
    """Linearized(decode) and cell_metrics(method="stacked") in float64 against the reverse-mode
    Jacobian of each whole image (torch.autograd.functional.jacobian): decode(Z) and J t for random
    tangents t, and JᵀJ of every cell. method="stacked" raises Unsupported rather than fall back
    to torch.func, so the stacked path is the one checked."""
    N, C, H, W = Z.shape
    J = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda z: decode(z[None]).reshape(-1), Z[n], vectorize=True)
            for n in range(N)
        ]
    )  # (N, P, C, H, W)
    t = torch.randn(n_tan, *Z.shape, generator=torch.Generator().manual_seed(0), dtype=Z.dtype)
    with torch.no_grad():
        out = Linearized(decode)(torch.cat([Z[None], t]).flatten(0, 1), 1 + n_tan)
        ref = decode(Z).flatten(1)
    out = out.unflatten(0, (1 + n_tan, N)).flatten(2)
    torch.testing.assert_close(out[0], ref, rtol=0, atol=atol)
    torch.testing.assert_close(out[1:], torch.einsum("npchw,tnchw->tnp", J, t), rtol=0, atol=atol)
    G = cell_metrics(decode, Z, np.arange(N * H * W), dtype=torch.float64, method="stacked", fuse=fuse)
    Jc = J.permute(0, 3, 4, 1, 2).flatten(0, 2)  # (cell n*H*W + h*W + w, P, C)
    G_ref = (Jc.transpose(1, 2) @ Jc).numpy()
    np.testing.assert_allclose(G, G_ref, rtol=1e-6, atol=1e-6 * np.abs(G_ref).max())  # G comes back in float32


def _randomize_affine(module, seed):
    """GroupNorm weights and biases far from (1, 0), so that a rule dropping them shows."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            m.weight.data.copy_(1 + 0.5 * torch.randn(m.num_channels, generator=g))
            m.bias.data.copy_(0.5 * torch.randn(m.num_channels, generator=g))


class _Around(nn.Module):
    """1x1 conv -> 3 tanh -> `layer` -> sigmoid -> 3x3 conv: the layer under test sees inputs
    in (-3, 3), on both sides of kinks and thresholds, and a nonlinearity after it makes its
    primal output matter too. `layer` is a module or a function (traced as the call it makes)."""

    def __init__(self, layer, c_in=3, c=4):
        super().__init__()
        self.pre, self.post = nn.Conv2d(c_in, c, 1), nn.Conv2d(c, 2, 3, padding=1)
        self.layer = layer

    def forward(self, z):
        return self.post(torch.sigmoid(self.layer(3 * torch.tanh(self.pre(z)))))


def _check_layer(layer, seed=0, grid=3):
    torch.manual_seed(seed)
    net = _Around(layer).double()
    _randomize_affine(net, seed)
    _check_reverse_mode(net.eval(), torch.randn(2, 3, grid, grid, dtype=torch.float64))


_ACTIVATIONS = {
    "ReLU": nn.ReLU(),
    "F.relu": F.relu,
    "torch.relu": torch.relu,
    ".relu": lambda y: y.relu(),
    "LeakyReLU": nn.LeakyReLU(0.2),
    "F.leaky_relu": lambda y: F.leaky_relu(y, 0.2),
    "F.leaky_relu-kw": lambda y: F.leaky_relu(y, negative_slope=0.3),
    "ELU": nn.ELU(),
    "ELU-0.7": nn.ELU(alpha=0.7),
    "F.elu": F.elu,
    "F.elu-1.3": lambda y: F.elu(y, alpha=1.3),
    "SiLU": nn.SiLU(),
    "F.silu": F.silu,
    "GELU": nn.GELU(),
    "GELU-tanh": nn.GELU(approximate="tanh"),
    "F.gelu": F.gelu,
    "F.gelu-tanh": lambda y: F.gelu(y, approximate="tanh"),
    "Tanh": nn.Tanh(),
    "torch.tanh": torch.tanh,
    "F.tanh": F.tanh,
    ".tanh": lambda y: y.tanh(),
    "Sigmoid": nn.Sigmoid(),
    "torch.sigmoid": torch.sigmoid,
    "F.sigmoid": F.sigmoid,
    ".sigmoid": lambda y: y.sigmoid(),
    "Softplus": nn.Softplus(beta=2.0, threshold=1.0),
    "F.softplus": lambda y: F.softplus(y, 2.0, threshold=1.0),
}


@pytest.mark.parametrize("name", list(_ACTIVATIONS))
def test_activation_against_reverse_mode(name):
    """Every pointwise rule, as a module and as the functional call or method a forward may use."""
    _check_layer(_ACTIVATIONS[name])


_UPSAMPLERS = {
    "nearest-2x+conv1x1": nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 1)),  # not fused
    "nearest-size": nn.Upsample(size=(7, 5)),
    "nearest-exact": nn.Upsample(scale_factor=1.5, mode="nearest-exact"),
    "bilinear": nn.Upsample(scale_factor=2, mode="bilinear"),
    "bilinear-corners": nn.Upsample(size=(8, 5), mode="bilinear", align_corners=True),
    "UpsamplingBilinear2d": nn.UpsamplingBilinear2d(scale_factor=2),
    "UpsamplingNearest2d": nn.UpsamplingNearest2d(scale_factor=3),
    "F.interpolate-nearest": lambda y: F.interpolate(y, scale_factor=2),
    "F.interpolate-bilinear": lambda y: F.interpolate(y, size=(6, 7), mode="bilinear", align_corners=False),
    "F.interpolate-bicubic": lambda y: F.interpolate(y, scale_factor=2, mode="bicubic"),
}


@pytest.mark.parametrize("name", list(_UPSAMPLERS))
def test_upsampling_against_reverse_mode(name):
    """Nearest and bilinear resampling (module or F.interpolate) are linear maps of the whole
    stack; nearest 2x + a 1x1 conv is not the fused pair (_UpsampleConv: 3x3 only)."""
    _check_layer(_UPSAMPLERS[name])


class _FunctionalGroupNorm(nn.Module):
    def __init__(self, c=4, groups=2):
        super().__init__()
        self.weight, self.bias = nn.Parameter(1 + torch.randn(c)), nn.Parameter(torch.randn(c))
        self.groups = groups

    def forward(self, y):
        return F.group_norm(y, self.groups, self.weight, self.bias, eps=1e-3)


_NORMS = {
    "GroupNorm-2": nn.GroupNorm(2, 4),
    "GroupNorm-4-plain": nn.GroupNorm(4, 4, eps=0.1, affine=False),
    "GroupNorm-1": nn.GroupNorm(1, 4),
    "F.group_norm": _FunctionalGroupNorm(),
}


@pytest.mark.parametrize("name", list(_NORMS))
def test_group_norm_against_reverse_mode(name):
    """GroupNorm normalizes each sample's groups by their own statistics: not affine in its input,
    its tangent rule is the derivative at the primal's mean and variance (geovq.jvp._group_norm).
    One group per channel (instance norm) and one group for all (layer norm over C, H, W) too."""
    _check_layer(_NORMS[name])


class _Transposed(nn.Module):
    """ConvTranspose2d as DCGAN uses it (k=4, s=2, p=1); one with groups, dilation and output
    padding; one given output_size (which sets its output padding); a ConvTranspose1d."""

    def __init__(self):
        super().__init__()
        self.a = nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1)  # 3 -> 6
        self.b = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2)  # -> 14
        self.c = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, bias=False)  # -> 27, or 28 by output_size
        self.d = nn.ConvTranspose1d(2, 1, 3, stride=2)

    def forward(self, z):
        y = F.elu(self.b(torch.tanh(self.a(z))))
        y = self.c(y, output_size=(2 * y.shape[-2], 2 * y.shape[-1]))
        return self.d(torch.sigmoid(y).flatten(2))


def test_conv_transpose_against_reverse_mode():
    torch.manual_seed(3)
    net = _Transposed().double().eval()
    z = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    assert net(z).shape == (2, 1, 2 * 28 * 28 + 1)
    _check_reverse_mode(net, z)


def test_batchnorm_folds_into_conv_transpose():
    """for_jvp folds BatchNorm2d into the ConvTranspose2d before it, groups included (its weight
    is (in, out / groups, kh, kw)): the same function."""
    torch.manual_seed(4)
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2), nn.BatchNorm2d(6)).double()
    _randomize_bn(net, seed=6)
    net.eval()
    fused = for_jvp(net)
    assert [type(m) for m in fused] == [nn.ConvTranspose2d]
    z = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(z), net(z), rtol=0, atol=1e-12)


def _dcgan(latent=8, width=16, last=None):
    """Issue 15's DCGAN-style decoder at small widths: a (latent, 4, 4) grid through a 1x1 conv
    latent -> width, then ConvTranspose2d(k=4, s=2, p=1) width -> width/2 -> width/4 -> 1, each
    but the last with BatchNorm2d and ReLU: (1, 32, 32) means (Sigmoid) or logits (last None)."""
    layers = [nn.Conv2d(latent, width, 1), nn.BatchNorm2d(width), nn.ReLU()]
    for c_in, c_out in ((width, width // 2), (width // 2, width // 4)):
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]
    layers.append(nn.ConvTranspose2d(width // 4, 1, 4, 2, 1))
    return nn.Sequential(*layers, *([last] if last is not None else []))


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("last", ["sigmoid", "logits"])
def test_dcgan_decoder_against_reverse_mode(last, fuse):
    """The whole DCGAN-style decoder through cell_metrics(method="stacked"), BatchNorm folded
    into its convs (fuse) or run as it is, against reverse-mode JᵀJ."""
    torch.manual_seed(5)
    net = _dcgan(last=nn.Sigmoid() if last == "sigmoid" else None).double()
    _randomize_bn(net, seed=7)
    net.eval()
    if fuse:
        assert not any(isinstance(m, nn.BatchNorm2d) for m in for_jvp(net).modules())
    _check_reverse_mode(net, torch.randn(2, 8, 4, 4, dtype=torch.float64), fuse=fuse)


class _Square(nn.Module):
    """A fixed 1x1 channel mix, then squared: y = A z + b at each pixel, f = y * y (no stacked rule for
    the product). By hand, J of a pixel's outputs with respect to its cell (other pixels don't depend on
    it) is 2 diag(y) A, so G = A^T diag(4 y^2) A: not diagonal."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.mix = nn.Conv2d(3, 4, 1).double()
        with torch.no_grad():
            self.mix.weight.copy_(torch.randn(4, 3, 1, 1, generator=g, dtype=torch.float64))
            self.mix.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))

    def forward(self, z):
        y = self.mix(z)
        return (y * y).flatten(1)

    def jacobian(self, cell):
        A, b = self.mix.weight[:, :, 0, 0].detach(), self.mix.bias.detach()
        return 2 * (A @ cell + b)[:, None] * A


class _Branchy(nn.Module):
    def forward(self, z):
        return z if z.sum() > 0 else -z


class _BatchMixer(nn.Module):
    """Elementwise sigmoid, flattened across the batch; by hand J = diag(s (1 - s)), s = sigmoid(z)."""

    def forward(self, z):
        return torch.sigmoid(z.reshape(-1))

    def jacobian(self, cell):
        s = torch.sigmoid(cell)
        return torch.diag(s * (1 - s))


@pytest.mark.parametrize(
    "net,when,match", [(_Square(), "run", "mul"), (_Branchy(), "trace", "trace"), (_BatchMixer(), "run", "batch")]
)
def test_refuses_what_it_has_no_rule_for(net, when, match):
    """Refused with the operation named, never approximated; cell_metrics's default then uses
    torch.func and still gets the exact metric, while method='stacked' passes the error on."""
    z = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    with pytest.raises(Unsupported, match=match):
        Linearized(net)(torch.cat([z, z]), 2)
    if when == "trace":
        with pytest.raises(Unsupported):
            Linearized(net)
    if isinstance(net, _Branchy):
        return  # a data-dependent branch: no Jacobian to compare with
    cells = np.array([0, 1, 2, 3, 4, 5, 6, 7, 6, 1])  # every cell of both images (n*4 + h*2 + w), some twice
    G = cell_metrics(net, z.numpy(), cells, dtype=torch.float64)
    # the oracle: the Jacobian written by hand for each cell's latent vector z[n, :, h, w]
    J = [net.jacobian(z[c // 4, :, (c % 4) // 2, c % 2]) for c in cells]
    G_ref = torch.stack([j.T @ j for j in J]).numpy()
    np.testing.assert_allclose(G, G_ref, rtol=1e-6, atol=1e-6)  # G comes back in float32
    with pytest.raises(Unsupported):
        cell_metrics(net, z.numpy(), cells, dtype=torch.float64, method="stacked")


class _Shared(nn.Module):
    """Rules whose tangent needs the primal (GroupNorm, SiLU, Sigmoid, Tanh) and homogeneous ones
    (ReLU, in place after a conv and out of place after an add), a ConvTranspose2d and bilinear
    upsampling: every place where tangents meet their primal."""

    def __init__(self):
        super().__init__()
        self.a, self.gn = nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear")
        self.t = nn.ConvTranspose2d(4, 2, 4, 2, 1)

    def forward(self, z):
        y = F.silu(self.gn(self.a(z)))
        y = torch.relu(self.up(y) + 0.5)
        return torch.sigmoid(self.t(torch.tanh(y))).relu()


def test_shared_primal_equals_a_primal_per_cell():
    """owner: tangents of one primal row share its decode (cells of one image); the stack
    [z (U); t (T x B)] gives the same numbers as [z[owner] (B); t (T x B)], owners out of order."""
    torch.manual_seed(8)
    net = _Shared().double().eval()
    _randomize_affine(net, 8)
    lin = Linearized(net)
    z = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    owner = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    t = torch.randn(2 * len(owner), 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        shared = lin(torch.cat([z, t]), 3, owner=owner)
        per_cell = lin(torch.cat([z[owner], t]), 3)
    assert shared.shape[0] == 3 + 2 * len(owner)
    torch.testing.assert_close(shared[:3], net(z), rtol=0, atol=1e-12)
    torch.testing.assert_close(shared[3:], per_cell[len(owner) :], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="no primal rows"):
        lin(t, 3, owner=owner)


def test_cell_metrics_share_primal_equals_a_primal_per_cell():
    """Cells of one image, given out of order and across chunks, with a per-pixel weight of the
    primal: share_primal=True (one decode per image and chunk) is share_primal=False."""
    torch.manual_seed(9)
    net = _Shared().double().eval()
    _randomize_affine(net, 9)
    Z = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    cells = np.random.default_rng(0).permutation(np.r_[np.arange(80), np.arange(16, 48)])

    def weight(p):
        return torch.sigmoid(p) * torch.sigmoid(-p)

    def metrics(share):
        return cell_metrics(
            net, Z, cells, weight=weight, method="stacked", dtype=torch.float64, batch_size=37, share_primal=share
        )

    shared, per_cell = metrics(True), metrics(False)
    np.testing.assert_allclose(shared, per_cell, rtol=1e-6, atol=1e-7 * np.abs(per_cell).max())
    assert np.abs(per_cell).max() > 0


def test_batchnorm_in_training_mode_refused():
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).train()
    with pytest.raises(Unsupported, match="training"):
        Linearized(net)(torch.randn(4, 2, 3, 3), 2)


_FAULTS = """
import resource, sys, numpy as np, torch
from geovq.device import keep_freed_memory
from geovq.models import SpatialVAE
from geovq.riemann import cell_metrics
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
torch.manual_seed(0)
vae = SpatialVAE((1, 28, 28), latent_channels=8, grid=4, channels=(16, 32, 32))
Z = np.random.default_rng(0).normal(size=(64, 8, 4, 4)).astype(np.float32)
# a tangent per cell (color=False): 1 + 8 x 128 rows a batch, the largest activations; with the
# colouring's 1 + 8 x 72 the default's faults halve and the kept run's few hundred, from the
# gathers of differently sized chunks, vary from run to run (36, 709 and 2 330 in three runs)
cell_metrics(vae.decode, Z, np.arange(512), color=False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cell_metrics(vae.decode, Z, np.arange(1024), color=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults_per_batch():
    """The default spatial decoder's metrics, 8 batches of 128 cells: by default glibc hands the
    MB-sized activations back to the OS and faults them in again every batch; after
    keep_freed_memory they are reused. Fresh processes: the setting is process-wide."""
    import subprocess
    import sys

    def faults(mode):
        run = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
        return int(run.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 5000 and kept < default / 10, (default, kept)


# --- receptive fields: cells with disjoint ones share a tangent -------------------------------


def _local_tanh(dilated=False):
    """A convolutional decoder with nowhere-zero derivatives (tanh, sigmoid), so its Jacobian's
    nonzero pattern is its structural one: the pipeline's 4 -> 7 -> 14 -> 28 spatial decoder, or
    transposed, strided, dilated and bilinear layers (6 x 6 grid -> 12 -> 12 -> 24 -> 48)."""
    if dilated:
        layers = [
            nn.ConvTranspose2d(3, 4, 4, stride=2, padding=1),
            nn.Tanh(),
            nn.Conv2d(4, 4, 3, padding=2, dilation=2),
            nn.Tanh(),
            nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear"),
            nn.Conv2d(3, 2, 1),
        ]
    else:
        layers = [nn.Conv2d(3, 6, 1)]
        for size, c_in, c_out in ((7, 6, 6), (14, 6, 5), (28, 5, 1)):
            layers += [nn.Upsample(size=(size, size)), nn.Conv2d(c_in, c_out, 3, padding=1), nn.Tanh()]
        layers[-1] = nn.Sigmoid()
    return nn.Sequential(*layers).double().eval()


def _jacobian_supports(decode, z):
    """(H·W, Ho, Wo): output pixels where some channel of J e_(cell, c) is nonzero at z (1, C, H, W)."""
    J = torch.func.jacfwd(lambda v: decode(v)[0])(z)  # (Co, Ho, Wo, 1, C, H, W)
    J = J.abs().sum(0)[:, :, 0].sum(2)  # (Ho, Wo, H, W)
    return (J != 0).permute(2, 3, 0, 1).flatten(0, 1)


@pytest.mark.parametrize("dilated", [False, True])
@pytest.mark.parametrize("rewritten", [False, True])
def test_cell_supports_are_the_jacobians_nonzero_pattern(dilated, rewritten):
    """With nowhere-zero derivatives the structural supports are exactly where J is nonzero
    (torch.func.jacfwd), for the decoder as given and as for_jvp rewrites it."""
    torch.manual_seed(11)
    net = _local_tanh(dilated)
    H = 6 if dilated else 4
    decode = for_jvp(net) if rewritten else net
    sup = cell_supports(Linearized(decode), (H, H))
    z = torch.randn(1, 3, H, H, dtype=torch.float64)
    assert torch.equal(sup, _jacobian_supports(net, z))
    assert 0 < sup.sum(dim=(1, 2)).min() and sup.sum(dim=(1, 2)).max() < sup[0].numel()  # local, not empty


def test_cell_supports_of_the_spatial_vae_cover_its_jacobian():
    """The pipeline's SpatialVAE (ReLU: a ReLU that is off only shrinks the true support): every
    nonzero of J lies in its cell's support; the fields are those found by hand (a cell of the 4 x 4
    grid reaches rows 0-14, 1-22, 9-27, 17-27 of 28 for grid rows 0-3), so 9 colours serve 16
    cells: rows and columns {0, 3}, {1}, {2}."""
    torch.manual_seed(12)
    vae = SpatialVAE((1, 28, 28), latent_channels=3, grid=4, channels=(4, 6, 5)).double()
    _randomize_bn(vae, seed=5)
    vae.eval()
    sup = cell_supports(Linearized(for_jvp(vae.decode)), (4, 4))
    rows = [tuple(r.any(1).nonzero()[[0, -1], 0].tolist()) for r in sup[[0, 4, 8, 12]]]
    assert rows == [(0, 14), (1, 22), (9, 27), (17, 27)]
    for seed in range(3):
        z = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        empirical = _jacobian_supports(vae.decode, z)
        assert not (empirical & ~sup).any() and empirical.any()
    c = Coloring.of(Linearized(for_jvp(vae.decode)), (4, 4))
    assert c.n_colors == 9
    assert (
        torch.equal(c.colors.view(4, 4)[0], c.colors.view(4, 4)[3])
        and c.colors.view(4, 4)[0, 0] == c.colors.view(4, 4)[0, 3]
    )


def test_coloring_never_merges_overlapping_cells():
    """Greedy colouring of random supports: cells that share a colour never share a pixel, and
    each cell takes the smallest colour its earlier neighbours leave."""
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        sup = torch.rand(12, 5, 5, generator=g) < 0.08 + 0.02 * trial
        c = Coloring(sup)
        flat = sup.flatten(1).double()
        overlap = (flat @ flat.T) > 0
        same = c.colors[:, None] == c.colors[None, :]
        assert not (overlap & same & ~torch.eye(12, dtype=torch.bool)).any()
        for i in range(12):
            taken = {int(c.colors[j]) for j in range(i) if overlap[i, j]}
            assert int(c.colors[i]) == min(set(range(13)) - taken)
        assert c.n_colors == int(c.colors.max()) + 1


class _Offset(nn.Module):
    """x + a stored tensor (a get_attr node), then 2 * x (the scalar first)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.register_buffer("offset", torch.randn(1, 2, 4, 4))

    def forward(self, z):
        return 2 * (self.conv(z) + self.offset)


class _SizedTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(3, 1, 3, stride=2, padding=1)

    def forward(self, z):
        return self.up(z, output_size=(8, 8))


@pytest.mark.parametrize("net", ["linear", "group_norm", "reshape", "circular", "bicubic", "output_size", "offset"])
def test_cell_supports_refuse_what_mixes_pixels(net):
    """A Linear over the flattened map, a GroupNorm (statistics over all pixels), a reshape, a
    circular padding (a cell reaches the far edge), a bicubic upsampling (negative weights), a
    ConvTranspose2d given output_size, a stored tensor and a scalar product: no support rule
    here, so no colouring (every cell its own tangent)."""
    layers = {
        "linear": [nn.Flatten(), nn.Linear(3 * 16, 49), nn.Unflatten(1, (1, 7, 7))],
        "group_norm": [nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Conv2d(4, 1, 3, padding=1)],
        "reshape": [nn.Conv2d(3, 4, 1), nn.PixelShuffle(2)],
        "circular": [nn.Conv2d(3, 1, 3, padding=1, padding_mode="circular")],
        "bicubic": [nn.Upsample(scale_factor=2, mode="bicubic"), nn.Conv2d(3, 1, 1)],
        "output_size": [_SizedTranspose()],
        "offset": [_Offset()],
    }[net]
    lin = Linearized(nn.Sequential(*layers).double().eval())
    assert cell_supports(lin, (4, 4)) is None
    assert Coloring.of(lin, (4, 4)) is None


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dilated", [False, True])
def test_colored_cell_metrics_equal_uncolored(dilated, channels_last, monkeypatch):
    """cell_metrics with colour-shared tangents (color=True, the default) is cell_metrics with a
    tangent per cell, on cells given out of order, partly repeated and across chunks, with a
    per-pixel weight of the primal, in either memory layout (the dilated net has 2 output
    channels, so the masks' channel order matters); in float64 to rounding, and in float32 (the
    pipeline's dtype) on the SpatialVAE to float32 rounding. The decoder passes are counted: the
    coloured run pushes fewer rows through it."""
    torch.manual_seed(13)
    net = _local_tanh(dilated)
    H = 6 if dilated else 4
    Z = torch.randn(6, 3, H, H, dtype=torch.float64)
    n = 6 * H * H
    cells = np.random.default_rng(1).permutation(np.r_[np.arange(n), np.arange(H * H, 3 * H * H)])

    def weight(p):
        return torch.sigmoid(p) * torch.sigmoid(-p)

    rows = []
    call = Linearized.__call__

    def counted(self, x, *args, **kwargs):
        rows.append(len(x))
        return call(self, x, *args, **kwargs)

    monkeypatch.setattr(Linearized, "__call__", counted)

    def metrics(color, **kw):
        rows.clear()
        G = cell_metrics(
            net,
            Z,
            cells,
            weight=weight,
            method="stacked",
            batch_size=37,
            color=color,
            channels_last=channels_last,
            **kw,
        )
        return G, sum(rows)

    (colored, n_colored), (plain, n_plain) = metrics(True, dtype=torch.float64), metrics(False, dtype=torch.float64)
    assert n_colored < n_plain
    np.testing.assert_allclose(colored, plain, rtol=1e-9, atol=1e-12 * np.abs(plain).max())
    assert Coloring.of(Linearized(net), (H, H)) is not None

    vae = SpatialVAE((1, 28, 28), latent_channels=8, grid=4, channels=(16, 32, 32))
    _randomize_bn(vae, seed=6)
    vae.eval()
    Z = torch.randn(40, 8, 4, 4)
    ids = np.arange(40 * 16)
    a = cell_metrics(vae.decode, Z, ids, color=True, channels_last=channels_last)
    b = cell_metrics(vae.decode, Z, ids, color=False, channels_last=channels_last)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max())
