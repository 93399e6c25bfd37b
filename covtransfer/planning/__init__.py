"""Self-configuration: fingerprint, target spacing, topology and the experiment planner."""
