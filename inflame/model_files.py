"""The names in a run's `model/` folder (no torch here: the services and the ONNX backend read
them without it)."""

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "model.json"
MODEL_FORMAT = "inflame.image_classifier/1"
