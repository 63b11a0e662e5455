"""`inflame deploy`: a trained run as a managed real-time endpoint."""
