"""Pictures of masks over frames: overlays, contact sheets, PNG files."""
