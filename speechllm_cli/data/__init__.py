"""Data layer: corpus importers, TTS synthesis, manifests and their validation, text normalisation."""
