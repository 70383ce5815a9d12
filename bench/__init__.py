"""vlrl package."""
