"""The model-card template, shipped as the package data of ``cktf_hf.model_cards`` (see setup.cfg)."""
