"""Whole runs a user starts: embed into a bundle, attack a model, build reference models."""
