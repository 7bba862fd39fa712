"""Targeted perturbations of speech that model atypical (e.g. dysarthric) voices, on batches, CPU or GPU."""
