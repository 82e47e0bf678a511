"""Import hub for the PyTorch backend's spec operations: one name per vdm_ref clause.

    from vdm.backends.torch import ops
    sched = ops.make_schedule("cosine", 1000, device="cuda")
"""

from __future__ import annotations

from ._checks import (
    VALIDATION_MODES,
    set_validation,
    validation,
)
from .diffusion import (
    PREDICTIONS,
    VARIANCES,
    effective_beta,
    eps_from_v,
    eps_from_x0,
    model_log_variance,
    posterior_log_variance_clipped,
    posterior_mean,
    posterior_mean_coefs,
    posterior_variance,
    predict_x0_eps,
    q_mean_variance,
    q_sample,
    split_model_output,
    v_from_x0_eps,
    velocity,
    x0_from_eps,
    x0_from_v,
)
from .losses import (
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    mean_flat,
    min_snr_weight,
    normal_kl,
    simple_loss,
    std_normal_cdf,
    training_target,
    vlb_term,
)
from .samplers import (
    SAMPLERS,
    Sampler,
    classifier_free_guidance,
    clip_x0,
    ddim_direction_variance,
    ddim_sigma,
    ddim_step,
    ddpm_step,
    dynamic_threshold,
    process_x0,
    sample,
    sampling_noise,
)
from .schedules import (
    DEFAULT_PARAMS,
    SCHEDULES,
    TorchSchedule,
    alphas_cumprod,
    betas_cosine,
    betas_from_abar,
    betas_linear,
    betas_scaled_linear,
    betas_sigmoid,
    make_schedule,
    rescale_zero_terminal_snr,
    snr,
)
from .solvers import (
    SOLVERS,
    Grid,
    Solver,
    SolverState,
    gaussian_flow,
    gaussian_level_denoiser,
    network_calls,
    solve,
    solver_grid,
)
from .timesteps import (
    SPACINGS,
    inference_timesteps,
    previous_timestep,
    step_pairs,
    timesteps_leading,
    timesteps_linspace,
    timesteps_trailing,
)

Schedule = TorchSchedule  # vdm_ref's name for the same role

__all__ = [
    "SCHEDULES", "SPACINGS", "SAMPLERS", "Sampler", "PREDICTIONS", "VARIANCES", "DEFAULT_PARAMS", "VALIDATION_MODES",
    "Schedule", "TorchSchedule", "make_schedule", "rescale_zero_terminal_snr",
    "betas_linear", "betas_scaled_linear", "betas_cosine", "betas_sigmoid", "alphas_cumprod", "betas_from_abar", "snr",
    "set_validation", "validation",
    "inference_timesteps", "previous_timestep", "step_pairs",
    "timesteps_leading", "timesteps_trailing", "timesteps_linspace",
    "q_mean_variance", "q_sample", "velocity",
    "x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v", "v_from_x0_eps",
    "split_model_output", "predict_x0_eps",
    "effective_beta", "posterior_mean_coefs", "posterior_mean", "posterior_variance",
    "posterior_log_variance_clipped", "model_log_variance",
    "clip_x0", "dynamic_threshold", "process_x0", "ddpm_step", "ddim_sigma", "ddim_direction_variance", "ddim_step",
    "classifier_free_guidance", "sampling_noise", "sample",
    "training_target", "min_snr_weight", "mean_flat", "simple_loss", "normal_kl",
    "std_normal_cdf", "discretized_gaussian_log_likelihood", "vlb_term", "hybrid_loss",
    "SOLVERS", "Solver", "SolverState", "Grid", "solver_grid", "solve", "network_calls",
    "gaussian_level_denoiser", "gaussian_flow",
]
