"""The transfer-study protocol and the synthetic demo."""
