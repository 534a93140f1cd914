"""Generative adversarial networks: DCGAN, conditional and WGAN-GP training, models and their evaluation."""
