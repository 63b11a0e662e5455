"""Active learning: query an unlabelled pool, import labels, retrain from a parent run."""
