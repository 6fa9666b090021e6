"""Stages: one module per stage, each ``run(context)`` reading and writing the experiment folder."""
