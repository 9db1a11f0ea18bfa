"""Experiments (DESIGN §8): gradient by distance, the exploding demo, the controlled long-range task, the comparison
grid and its report.

Imports: any stage below it (corpus, training, evaluation, tracking); nothing imports it but the commands.
"""
