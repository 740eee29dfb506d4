"""vis_core."""
