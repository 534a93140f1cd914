"""Adversarial examples: attacks (FGSM, PGD, C&W, black-box), defenses, patches and backdoors."""
