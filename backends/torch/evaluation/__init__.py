"""Evaluation: sample a model and score the clips (structure metrics, Frechet distance) beside
real held-out clips and noise."""

from .evaluate import evaluate, load_samples, metrics_of, noise_clips, real_clips, write_report
from .frechet import EvalError, feature_statistics, frechet_distance, load_feature_extractor, trace_sqrt_product

__all__ = [
    "evaluate", "load_samples", "metrics_of", "noise_clips", "real_clips", "write_report",
    "EvalError", "feature_statistics", "frechet_distance", "load_feature_extractor", "trace_sqrt_product",
]
