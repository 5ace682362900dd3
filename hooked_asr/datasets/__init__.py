"""Labelled audio sets built offline (espeak-ng speech, noise, tones) and loaders for real corpora."""
