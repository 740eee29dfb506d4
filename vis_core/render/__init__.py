"""Pictures of masks over frames: overlays, contact sheets, PNG files."""

# Previews draw only tracks scoring at least this (`vis render --min-score`, `vis demo`).
DEFAULT_MIN_SCORE = 0.5
