"""`inflame serve`: a trained run behind a REST API (FastAPI on uvicorn)."""
