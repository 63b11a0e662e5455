"""`inflame api`: training jobs over HTTP (submit a spec, follow it, cancel it)."""
