"""Counting and measuring the variants: Table I (parameters, MACs) and timing / memory."""
