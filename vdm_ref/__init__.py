"""vdm_ref: the exact NumPy (float64) reference that defines every clause of spec v1.

Importing it needs NumPy only. Each public function names its spec clause in its docstring;
see spec/SPEC.md, section "Reference API", for the list.
"""

from .conditioning import (
    frame_mask,
    keep_observed,
    reconstruction_guided_x0,
    replace_observed,
    with_reconstruction_guidance,
    with_replacement,
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
from .ideal import gaussian_ideal_model, points_ideal_model, process_gaussian_ideal_model, process_points_ideal_model
from .losses import (
    EDM_P_MEAN,
    EDM_P_STD,
    FLOW_DENSITIES,
    FLOW_DENSITY_PARAMS,
    discretized_gaussian_log_likelihood,
    edm_loss_weight,
    edm_sigma_from_uniform,
    flow_level_from_uniform,
    hybrid_loss,
    mean_flat,
    min_snr_weight,
    normal_kl,
    normal_quantile,
    process_min_snr_weight,
    process_simple_loss,
    simple_loss,
    std_normal_cdf,
    training_target,
    vlb_term,
    vp_timestep_from_uniform,
)
from .processes import (
    FAMILIES,
    FLOW_TIME_SCALE,
    PREDICTION_TYPES,
    SIGMA_DATA,
    SIGMA_MAX,
    SIGMA_MIN,
    Process,
    alpha_sigma,
    alpha_sigma_from_edm_sigma,
    check_alpha_sigma,
    convert_prediction,
    edm_preconditioning,
    edm_sigma,
    from_x0_eps,
    half_log_snr,
    input_scale,
    network_condition,
    to_x0_eps,
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
from .schedules import DEFAULT_PARAMS, SCHEDULES, Schedule, make_schedule, rescale_zero_terminal_snr
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
from .timesteps import SPACINGS, inference_timesteps, previous_timestep, step_pairs

SPEC_VERSION = "1.0.0"
# Spec majors whose checkpoints and exported models this version reads: 2.0.0 only added to 1.0.0.
READABLE_SPEC_MAJORS = ("1", "2")

__all__ = [
    "SPEC_VERSION", "READABLE_SPEC_MAJORS", "SCHEDULES", "SPACINGS", "SAMPLERS", "PREDICTIONS", "VARIANCES",
    "DEFAULT_PARAMS",
    "Schedule", "Sampler", "make_schedule", "rescale_zero_terminal_snr",
    "inference_timesteps", "previous_timestep", "step_pairs",
    "q_mean_variance", "q_sample", "velocity",
    "x0_from_eps", "eps_from_x0", "x0_from_v", "eps_from_v", "v_from_x0_eps",
    "split_model_output", "predict_x0_eps",
    "effective_beta", "posterior_mean_coefs", "posterior_mean", "posterior_variance",
    "posterior_log_variance_clipped", "model_log_variance",
    "clip_x0", "dynamic_threshold", "process_x0", "ddpm_step", "ddim_sigma", "ddim_direction_variance", "ddim_step",
    "classifier_free_guidance", "sampling_noise", "sample",
    "training_target", "min_snr_weight", "mean_flat", "simple_loss", "normal_kl",
    "std_normal_cdf", "discretized_gaussian_log_likelihood", "vlb_term", "hybrid_loss",
    "gaussian_ideal_model", "points_ideal_model",
    "FAMILIES", "PREDICTION_TYPES", "SIGMA_DATA", "SIGMA_MIN", "SIGMA_MAX", "FLOW_TIME_SCALE", "Process",
    "alpha_sigma", "network_condition", "input_scale", "check_alpha_sigma",
    "to_x0_eps", "from_x0_eps", "convert_prediction", "edm_preconditioning",
    "half_log_snr", "edm_sigma", "alpha_sigma_from_edm_sigma",
    "process_gaussian_ideal_model", "process_points_ideal_model",
    "normal_quantile", "FLOW_DENSITIES", "FLOW_DENSITY_PARAMS", "EDM_P_MEAN", "EDM_P_STD",
    "flow_level_from_uniform", "edm_sigma_from_uniform", "vp_timestep_from_uniform",
    "process_simple_loss", "edm_loss_weight", "process_min_snr_weight",
    "SOLVERS", "Solver", "SolverState", "Grid", "solver_grid", "solve", "network_calls",
    "gaussian_level_denoiser", "gaussian_flow",
    "frame_mask", "replace_observed", "with_replacement", "reconstruction_guided_x0",
    "with_reconstruction_guidance", "keep_observed",
]
