"""Evaluation (DESIGN §7): whole-word prediction from pieces, accuracy by distance and position, the seeded
word-weighted sample, intervals, probes, the Kneser-Ney n-gram baseline and the plots.

Imports: `models`, `pipeline.corpus`, `pipeline.checkpoints`, `pipeline.tracking` (to resolve model references and log
results), `pipeline.config`. Never Lightning or `pipeline.training`.
"""
