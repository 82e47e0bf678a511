"""Small shared constants for tests (importable as `helpers`: pytest puts tests/ on sys.path)."""

# A U-Net small enough that a training step takes milliseconds on one CPU thread, as JSON-style
# model overrides of a TrainConfig.
MICRO_TRAIN_MODEL = {"base_channels": 8, "channel_mult": [1, 2], "attn_levels": [1],
                     "temporal_attn_levels": [1], "norm_groups": 4}

# UNetConfig keyword arguments of a grayscale micro model (4 frames, 8x8) for export and sampling tests.
MICRO_UNET = dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,),
                  temporal_attn_levels=(0, 1), num_heads=2, norm_groups=4, frames=4, image_size=8)
