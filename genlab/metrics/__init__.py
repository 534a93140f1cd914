"""Metrics of generated images as pure functions of features and images: Fréchet and kernel distances,
precision/recall, coverage and memorization, CLIP score, prompt adherence, reconstruction quality; and the
plots and HTML pages that show them. What reads images into features, and the evaluations that generate
and score, are genlab.evaluation."""
