"""Orchestration above the layers it combines: verify, fingerprint, plan and preprocess datasets."""
