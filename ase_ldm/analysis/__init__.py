"""Evaluation of density trajectories: statistics, errors, dynamics, plots. Never imports models."""
