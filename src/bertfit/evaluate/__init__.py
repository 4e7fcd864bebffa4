"""Judging a trained run: the evaluation run, calibration, baselines, figures, report, model card, explanations."""
