"""Evaluation: sample a model and score the clips (moving-shapes structure metrics or natural-video
statistics, by the checkpoint's data kind; Frechet distance) beside real held-out clips and noise."""

from .evaluate import (
    EVAL_KINDS,
    evaluate,
    load_samples,
    metrics_of,
    noise_clips,
    real_clips,
    real_reference,
    write_report,
)
from .frechet import EvalError, feature_statistics, frechet_distance, load_feature_extractor, trace_sqrt_product

__all__ = [
    "EVAL_KINDS", "evaluate", "load_samples", "metrics_of", "noise_clips", "real_clips", "real_reference",
    "write_report",
    "EvalError", "feature_statistics", "frechet_distance", "load_feature_extractor", "trace_sqrt_product",
]
