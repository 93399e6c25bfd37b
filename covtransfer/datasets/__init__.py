"""Synthetic chest-CT phantoms and converters for the public datasets."""
