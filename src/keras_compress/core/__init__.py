"""What every technique shares: config base, model walking, reports."""
