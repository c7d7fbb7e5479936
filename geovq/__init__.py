"""geovq: post-hoc geodesic quantization of VAE latent spaces."""

__version__ = "0.1.0"
