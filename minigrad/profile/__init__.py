"""Compute speed: one training step timed per batch size, per op (breakdown), against the roofs (roofline), next to
other frameworks (frameworks), and its printed report and figures."""
