"""The aecodec model: a variable-rate mean-scale hyperprior.

Architecture (Ballé et al. 2018; Minnen et al. 2018 without the serial
autoregressive context; per-level gains after Cui et al. 2021)::

    x -> g_a -> y * gain[q] -> h_a -> z -> Q -> z_hat -> h_s -> (scales, means)
                    |                                              |
                    Q  (Gaussian conditional, coded with the tables)
                    |
                  y_hat * inv_gain[q] -> g_s -> x_hat

One set of weights serves every quality level ``q``: a learned positive gain
vector per level scales the latent channels before quantisation (a larger gain
means a finer quantiser and a higher rate), and a separate learned inverse gain
undoes it before synthesis.

The entropy-parameter path (z_hat -> h_s -> scale indexes and means) runs in
float64 on the CPU.  Its input z_hat is integer-valued, so the encoder and the
decoder compute the same parameters up to float64 rounding, far below the
spacing of the scale table: the choice of CDF for each symbol does not depend
on thread count or on the convolution kernels used.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import import_compressai

import_compressai()

from compressai.entropy_models import EntropyBottleneck, GaussianConditional  # noqa: E402
from compressai.layers import GDN as _GDN  # noqa: E402
from compressai.models import CompressionModel  # noqa: E402
from compressai.models.utils import conv, deconv  # noqa: E402

# Scale table of the Gaussian conditional (Ballé's tensorflow/compression
# defaults): 64 log-spaced standard deviations from 0.11 to 256.
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64

# Rate-distortion trade-off per quality level (loss = lmbda * 255^2 * MSE + bpp),
# the values CompressAI uses for its MSE-optimised models q1..q8.
DEFAULT_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.1800)


class GDN(_GDN):
    """compressai's GDN with the 1x1 normalisation as a matrix product.

    Same parameters and the same function; oneDNN's 1x1 convolution gives
    results that depend on the thread count, a matrix product does not.  In
    training mode the (faster, ~15% per step) convolution is used: training
    needs no bit-exactness, coding always runs in eval mode.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            if torch.is_autocast_enabled(x.device.type):  # mixed-precision training: GDN in float32
                with torch.autocast(x.device.type, enabled=False):
                    return super().forward(x.float())
            return super().forward(x)
        B, C, H, W = x.shape
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma)
        norm = torch.matmul(gamma, (x * x).reshape(B, C, H * W)) + beta[:, None]
        norm = torch.sqrt(norm) if self.inverse else torch.rsqrt(norm)
        return x * norm.reshape(B, C, H, W)


class StaticPermEntropyBottleneck(EntropyBottleneck):
    """compressai's ``EntropyBottleneck`` whose training/evaluation pass moves the channels
    first with a fixed tuple of dimensions.  compressai builds that permutation as a tensor,
    and ``torch.compile`` must split the graph at every permute by a tensor (6 graph breaks
    per training step, ``aecodec train --compile``).  Same arithmetic, same state and names;
    coding (``compress``/``decompress``) is compressai's own."""

    def forward(self, x: torch.Tensor, training: Optional[bool] = None):
        if training is None:
            training = self.training
        perm = (1, 0, *range(2, x.ndim))  # B x C x ... <-> C x B x ... (its own inverse)
        v = x.permute(perm).contiguous()
        shape = v.shape
        outputs = self.quantize(v.reshape(shape[0], 1, -1), "noise" if training else "dequantize",
                                self._get_medians())
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        return (outputs.reshape(shape).permute(perm).contiguous(),
                likelihood.reshape(shape).permute(perm).contiguous())


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class GainedMeanScaleHyperprior(CompressionModel):
    """Mean-scale hyperprior with per-level gain vectors (variable rate).

    Args:
        N: channels of the hidden layers and of z.
        M: channels of the latent y.
        lambdas: the rate-distortion trade-off of each quality level; the
            number of levels is ``len(lambdas)``.
    """

    arch = "gained-mean-scale-hyperprior"
    short_name = "msh"
    downsampling = 64  # g_a (16) x h_a (4): inputs are padded to a multiple of this

    def __init__(self, N: int = 128, M: int = 192, lambdas: Sequence[float] = DEFAULT_LAMBDAS):
        super().__init__()
        self.N, self.M = int(N), int(M)
        self.lambdas = tuple(float(v) for v in lambdas)
        L = len(self.lambdas)

        self.g_a = nn.Sequential(
            conv(3, N), GDN(N),
            conv(N, N), GDN(N),
            conv(N, N), GDN(N),
            conv(N, M),
        )
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True),
            deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True),
            conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        self.entropy_bottleneck = StaticPermEntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional(None)

        # Log-gains per level. Initialised so that the quantiser step scales
        # like 1/sqrt(lambda) (high-rate theory), centred on the middle level.
        lam = torch.tensor(self.lambdas)
        init = 0.5 * torch.log(lam / lam.median())
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M).clone())
        self.log_inv_gain = nn.Parameter((-init)[:, None].repeat(1, M).clone())

        self._coding_cache = {}  # float64 copy of h_s for the coding path (not a submodule)

    # -- helpers -----------------------------------------------------------

    @property
    def levels(self) -> int:
        return len(self.lambdas)

    def _gains(self, q: torch.Tensor):
        """Gain and inverse gain for level indexes ``q`` (0-based), as (B, M, 1, 1)."""
        g = torch.exp(self.log_gain[q])[:, :, None, None]
        ig = torch.exp(self.log_inv_gain[q])[:, :, None, None]
        return g, ig

    def _as_levels(self, q, batch: int) -> torch.Tensor:
        if isinstance(q, int):
            if not 0 <= q < self.levels:
                raise ValueError(f"level index {q} out of range 0..{self.levels - 1}")
            return torch.full((batch,), q, dtype=torch.long)
        return q.long()

    # -- training ----------------------------------------------------------

    def forward(self, x: torch.Tensor, q) -> Dict:
        """Training/evaluation pass with continuous relaxation.

        Rates come from likelihoods of noisy latents (additive uniform noise);
        the synthesis sees rounded latents with a straight-through gradient.
        In eval mode, latents are rounded everywhere.
        """
        q = self._as_levels(q, x.shape[0])
        g, ig = self._gains(q)
        y = self._transform(self.g_a, x) * g
        z = self.h_a(y)
        z_tilde, z_likelihoods = self.entropy_bottleneck(z)
        if self.training:
            z_med = self.entropy_bottleneck._get_medians().detach().view(1, -1, 1, 1)
            z_hat = ste_round(z - z_med) + z_med
        else:
            z_hat = z_tilde
        scales, means = self.h_s(z_hat).chunk(2, 1)
        _, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        y_hat = ste_round(y - means) + means
        x_hat = self._transform(self.g_s, y_hat * ig)
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # Training only: the dtype of the transforms' convolutions under autocast (torch.bfloat16),
    # None for float32.  GDN, the entropy models and the loss stay in float32; coding never
    # uses it (not part of the weights).
    transform_dtype = None

    def _transform(self, f, v: torch.Tensor) -> torch.Tensor:
        if self.transform_dtype is None or not self.training:
            return f(v)
        with torch.autocast(v.device.type, dtype=self.transform_dtype):
            return f(v).float()

    # -- coding ------------------------------------------------------------

    def update(self, scale_table_=None, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the CDF tables (done once, at export; they are stored in the weights)."""
        if scale_table_ is None:
            scale_table_ = scale_table()
        return super().update(scale_table=scale_table_, force=force, update_quantiles=update_quantiles)

    def _entropy_parameters(self, z_hat: torch.Tensor):
        """(scale indexes int32, means float32) from z_hat, computed in float64."""
        h_s64 = self._coding_cache.get("h_s64")
        if h_s64 is None:
            import copy

            h_s64 = self._coding_cache["h_s64"] = copy.deepcopy(self.h_s).to(torch.float64).eval()
        with torch.no_grad():
            scales, means = h_s64(z_hat.to(torch.float64)).chunk(2, 1)
            table = self.gaussian_conditional.scale_table.to(torch.float64)
            bound = float(self.gaussian_conditional.lower_bound_scale.bound)
            scales = scales.clamp_min(bound)
            # index = number of table entries (but the last) below the scale,
            # i.e. the smallest table scale >= the predicted scale.
            indexes = torch.searchsorted(table[:-1].contiguous(), scales.contiguous(), right=False)
        return indexes.to(torch.int32), means.to(torch.float32)

    @torch.no_grad()
    def compress(self, x: torch.Tensor, q: int) -> Dict:
        """Entropy-code x (1x3xHxW in [0, 1], H and W multiples of 64) at level index q."""
        if x.shape[0] != 1:
            raise ValueError("compress takes one image at a time")
        qq = self._as_levels(q, 1)
        g, _ = self._gains(qq)
        y = self.g_a(x) * g
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes, means = self._entropy_parameters(z_hat)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        return {
            "strings": [y_strings, z_strings],
            "shape": tuple(z.size()[-2:]),
            "y_shape": tuple(y.size()[-2:]),
        }

    @torch.no_grad()
    def decompress(self, strings: List[List[bytes]], shape, q: int) -> Dict:
        if not (isinstance(strings, list) and len(strings) == 2):
            raise ValueError("expected [y_strings, z_strings]")
        qq = self._as_levels(q, 1)
        _, ig = self._gains(qq)
        z_hat = self.entropy_bottleneck.decompress(strings[1], tuple(shape))
        indexes, means = self._entropy_parameters(z_hat)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means)
        x_hat = self.g_s(y_hat * ig).clamp_(0, 1)
        return {"x_hat": x_hat, "y_hat": y_hat}

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor, q: int) -> Dict:
        """The ideal code length, in bits, of x's quantised latents under the exact
        model the coder implements: the stored 16-bit CDF tables at the coded scale
        indexes, plus compressai's escape (tail symbol + 4-bit bypass digits) for
        values outside a table.  An rANS coder can only add a few bytes to this.

        Also returns per-position maps (bits summed over channels) for y (H/16 x W/16)
        and z (H/64 x W/64).
        """
        qq = self._as_levels(q, 1)
        g, _ = self._gains(qq)
        y = self.g_a(x) * g
        z = self.h_a(y)
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        z_med = eb._get_medians().view(1, -1, 1, 1)
        z_sym = torch.round(z - z_med)
        z_idx = torch.arange(z.shape[1]).view(1, -1, 1, 1).expand_as(z)
        indexes, means = self._entropy_parameters(z_sym + z_med)
        y_sym = torch.round(y - means)
        y_map = table_bits(gc, y_sym, indexes).sum(1)[0]
        z_map = table_bits(eb, z_sym, z_idx).sum(1)[0]
        y_bits, z_bits = float(y_map.sum()), float(z_map.sum())
        return {"y": y_bits, "z": z_bits, "total": y_bits + z_bits, "y_map": y_map, "z_map": z_map}

    def load_state_dict(self, state_dict, strict: bool = True):
        self._coding_cache.clear()
        return super().load_state_dict(state_dict, strict=strict)


class LinearGainedHyperprior(GainedMeanScaleHyperprior):
    """The seed's sanity baseline: PCA's twin as a transform codec.

    g_a is one strided linear map (a 16x16 block transform to M coefficients, no
    nonlinearity) and g_s its linear transpose-convolution counterpart; the
    entropy model (gains, hyperprior, Gaussian conditional) and the loss are the
    same as the deep model's.  A deep model that loses to this is broken.
    """

    arch = "linear-gained-hyperprior"
    short_name = "lin"

    def __init__(self, N: int = 128, M: int = 192, lambdas: Sequence[float] = DEFAULT_LAMBDAS):
        super().__init__(N=N, M=M, lambdas=lambdas)
        self.g_a = nn.Conv2d(3, M, kernel_size=16, stride=16)
        self.g_s = nn.ConvTranspose2d(M, 3, kernel_size=16, stride=16)


ARCHITECTURES = {
    GainedMeanScaleHyperprior.arch: GainedMeanScaleHyperprior,
    LinearGainedHyperprior.arch: LinearGainedHyperprior,
}


def table_bits(em, symbols: torch.Tensor, indexes: torch.Tensor) -> torch.Tensor:
    """Bits each symbol costs under an entropy model's stored tables (compressai's rANS scheme).

    ``symbols`` are the integers coded (round(v - mean) for y, round(z - median)
    for z), ``indexes`` the CDF chosen for each.  A value v = symbol - offset in
    [0, len-2) costs -log2 of its 16-bit frequency; anything else costs the escape
    symbol plus compressai's bypass coding of the raw value in 4-bit digits.
    """
    cdf = em._quantized_cdf.long()
    idx = indexes.long().reshape(-1)
    v = symbols.long().reshape(-1) - em._offset.long()[idx]
    max_value = em._cdf_length.long()[idx] - 2
    inside = (v >= 0) & (v < max_value)
    pos = torch.where(inside, v, max_value)
    flat = cdf.reshape(-1)  # look up two entries per symbol, not a whole CDF row (memory O(symbols))
    at = idx * cdf.shape[1] + pos
    freq = flat[at + 1] - flat[at]
    bits = 16.0 - torch.log2(freq.double())
    raw = torch.where(v < 0, -2 * v - 1, 2 * (v - max_value)).clamp_min(0)
    n_digits = torch.zeros_like(raw)
    rest = raw.clone()
    while bool((rest > 0).any()):
        n_digits += (rest > 0).long()
        rest >>= 4
    escape = 4.0 * (n_digits // 15 + 1) + 4.0 * n_digits
    bits = bits + torch.where(inside, torch.zeros_like(bits), escape.double())
    return bits.reshape(symbols.shape)


def rd_loss(out: Dict, x: torch.Tensor, lmbda: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-sample rate-distortion loss: lmbda * 255^2 * MSE + bpp, averaged over the batch."""
    B, _, H, W = x.shape
    num_pixels = H * W
    bpp = sum(
        (-torch.log2(lik.clamp_min(1e-9))).reshape(B, -1).sum(1) for lik in out["likelihoods"].values()
    ) / num_pixels
    mse = F.mse_loss(out["x_hat"], x, reduction="none").reshape(B, -1).mean(1)
    loss = (lmbda * 255.0**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp, "mse": mse}
