"""`inflame sweep`: hyperparameter search with Optuna, trials run here or as cloud jobs."""
