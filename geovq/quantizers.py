"""What each quantizer is, stated once: the rule that builds its codebook, the decoder that turns
its codes into images, whether it is geodesic, and how its test cells can be assigned.

rules/common.smk, the report rules and the study tables all read this table; nothing else
spells out a list of quantizers.
"""

from __future__ import annotations

from dataclasses import dataclass

# How a test cell gets its code (geovq.assign): the nearest code vector; through the kNN graph (the
# geodesic codebooks' own rule); the code nearest under the decoder's pull-back metric at the cell,
# over all K codes, no graph; the code whose decoded image is closest to the continuous one among
# the metric's best (exact in image space).
ASSIGNS = ("nearest", "geodesic", "metric", "decode")
# the decoder pull-back metric kinds: the keys of geovq.riemann.METRICS, named here without torch
METRIC_KINDS = ("riemannian", "fisher")


@dataclass(frozen=True)
class Quantizer:
    name: str
    codebook_rule: str  # the rule that writes {quantizer}/codebook.npz
    decoder: str  # "vae": the VAE's decoder turns its codes into images; "vqvae": its own
    # geodesic quantizers: the kNN graph's edge lengths, "euclidean" or a decoder pull-back
    # metric of geovq.riemann.METRICS ("riemannian", "fisher")
    edge_lengths: str | None = None
    what: str = ""

    @property
    def geodesic(self) -> bool:
        return self.edge_lengths is not None

    @property
    def metric(self) -> str | None:
        """The decoder pull-back metric its edge lengths come from (None: Euclidean or not geodesic)."""
        return None if self.edge_lengths in (None, "euclidean") else self.edge_lengths

    @property
    def posthoc(self) -> bool:
        """Fitted after the fact on the shared train cells of a trained VAE."""
        return self.decoder == "vae"

    @property
    def native_assign(self) -> str:
        """How its own test codes (the prior's, the samples') are assigned."""
        return "geodesic" if self.geodesic else "nearest"

    @property
    def assigns(self) -> tuple[str, ...]:
        """Every assignment rule it can be scored with, its own first: geodesic only for geodesic ones."""
        return ("geodesic", "nearest", "metric", "decode") if self.geodesic else ("nearest", "metric", "decode")

    @property
    def swept_assigns(self) -> tuple[str, ...]:
        """The rules rule ``rate_distortion`` codes with at every K: all but decode (m decodes per test
        cell and K); the VQ-VAE, a point at its own K, with its own rule only."""
        if not self.posthoc:
            return (self.native_assign,)
        return tuple(a for a in self.assigns if a != "decode")

    def assign_metric(self, default: str) -> str:
        """The pull-back metric kind of its ``metric`` and ``decode`` assignment: its own edge lengths'
        (riemannian, fisher), else ``default`` (config ``assignment.metric``) of its decoder."""
        return self.metric or default


QUANTIZERS = {
    q.name: q
    for q in (
        Quantizer("kmeans", "euclidean_codebook", "vae", what="Euclidean k-means centroids (squared distances)"),
        Quantizer(
            "kmedoids",
            "euclidean_codebook",
            "vae",
            what="Euclidean K-medoids (FasterPAM; medoids, straight-line distances)",
        ),
        Quantizer(
            "graph",
            "geodesic_medoids",
            "vae",
            edge_lengths="euclidean",
            what="geodesic K-medoids on the kNN graph, Euclidean edge lengths",
        ),
        Quantizer(
            "riemannian",
            "geodesic_medoids",
            "vae",
            edge_lengths="riemannian",
            what="geodesic K-medoids on the kNN graph, decoder pull-back edge lengths",
        ),
        Quantizer(
            "fisher",
            "geodesic_medoids",
            "vae",
            edge_lengths="fisher",
            what="geodesic K-medoids on the kNN graph, Fisher-Rao edge lengths of the Bernoulli decoder",
        ),
        Quantizer("vqvae", "train_vqvae", "vqvae", what="end-to-end VQ-VAE (EMA codebook)"),
    )
}


def get(name: str) -> Quantizer:
    try:
        return QUANTIZERS[name]
    except KeyError:
        raise ValueError(f"unknown quantizer {name!r}; expected one of {list(QUANTIZERS)}") from None


def geodesic(names) -> list[str]:
    return [q for q in names if get(q).geodesic]


def metrics(names) -> list[str]:
    """The decoder pull-back metrics the quantizers ``names`` need, each once (graph/lengths_{metric}.npz)."""
    return list(dict.fromkeys(get(q).metric for q in names if get(q).metric))


def posthoc(names) -> list[str]:
    return [q for q in names if get(q).posthoc]


def built_by(rule: str, names) -> list[str]:
    return [q for q in names if get(q).codebook_rule == rule]


def evaluations(names, decode=None) -> list[tuple[str, str]]:
    """Every (quantizer, assign) pair a run scores: ``decode`` (config ``assignment.decode``) lists
    the quantizers also scored with the ``decode`` rule (None: all of them)."""
    return [(q, a) for q in names for a in get(q).assigns if a != "decode" or decode is None or q in decode]


# Training settings the VQ-VAE baseline shares with the VAE of its variant (the architecture
# too, see geovq.train.ARCH_KEYS): a comparison that changes them changes two things at once.
SHARED_TRAINING = ("epochs", "batch_size", "lr", "val_fraction")


def baseline_training(vae_section: dict, vqvae_section: dict) -> dict:
    """The VQ-VAE's training settings: the shared ones from the VAE's section, the VQ-specific
    ones (commitment beta, EMA decay, restarts, ...) from its own."""
    clash = sorted(set(SHARED_TRAINING) & set(vqvae_section))
    if clash:
        raise ValueError(
            f"config keys 'vqvae.*.{clash[0]}': the VQ-VAE trains with the VAE's "
            f"{', '.join(SHARED_TRAINING)} (set them under vae.<variant>)"
        )
    return {**vqvae_section, **{k: vae_section[k] for k in SHARED_TRAINING}}
