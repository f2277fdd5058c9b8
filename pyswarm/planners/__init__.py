"""planners layer."""
