"""Model core: encoders, posterior interfaces, projector, LLM, training loop, decoding."""
