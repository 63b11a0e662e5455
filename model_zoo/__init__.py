"""Ready apps for inflame: each sub-folder holds an app.py and its job specs."""
