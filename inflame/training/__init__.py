"""The reusable training loop: fit, checkpoints, early stopping, progress.

Apps call `fit(ctx, model, train_data, val_data, ...)`; the loop owns epochs, per-epoch
seeding (so a resumed run replays exactly), checkpoints and best-model selection.
"""

from inflame.training.loop import FitResult, evaluate, fit
from inflame.training.seeding import seed_everything

__all__ = ["FitResult", "evaluate", "fit", "seed_everything"]
