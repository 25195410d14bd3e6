"""Baselines: the counter app as a competent developer would write it without Roost."""
