"""The grid-latent diffusion family: a translation-equivariant latent that follows the atoms.

A periodic patch autoencoder maps the density onto a coarse latent grid (shifting the density by
whole patches shifts the latent), and a periodic convolutional denoiser generates the next latent
conditioned on the past latents and on the encoded learned prior density of the target atoms.
"""
