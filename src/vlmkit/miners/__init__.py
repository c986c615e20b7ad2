"""miners."""
