"""Evaluate a trained run: score a class-per-folder set, compute metrics, draw the plots and
write the report (`inflame eval`), and the per-run training curves."""
