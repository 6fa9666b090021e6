"""Metrics: WER/CER, error listings, result tables."""
