"""Model packages: export a trained model as one verified zip, install it, and use it by name or file."""
