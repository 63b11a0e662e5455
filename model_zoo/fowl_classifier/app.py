"""Fowl classifier: transfer learning for any class-per-folder image set.

Named for its first data set (chicken vs turkey), it trains any torchvision classification
backbone with a fresh head on any number of classes. Run it with
`inflame train --local job.toml`, or on its own with `python app.py [SPEC]`.
"""

from __future__ import annotations

from typing import Any

from inflame import Context, HParam, run_app
from inflame.errors import InflameError
from inflame.hparams import between, non_negative, positive


def _weights_or_switch(value: bool | str) -> None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", ""):
        raise ValueError(
            f"is the text {value!r}: write true or false without quotes, or give a weights "
            "file's path"
        )


def _momentum(value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"must be at least 0 and below 1, got {value!r}")


def _workers(value: int | str) -> None:
    if value != "auto" and (isinstance(value, str) or not 0 <= value <= 256):
        raise ValueError(f'must be "auto" or a number of processes (0 to 256), got {value!r}')


HPARAMS = (
    HParam(
        "architecture",
        str,
        "resnet18",
        "Any torchvision classification model: resnet18, resnet50, mobilenet_v3_small, "
        "efficientnet_b0, …",
    ),
    HParam(
        "pretrained",
        (bool, str),
        True,
        "true: torchvision's ImageNet weights (downloaded once); false: random init; or a "
        "local weights file (.safetensors or a .pth state dict), relative to the spec.",
        check=_weights_or_switch,
        file=True,  # cloud jobs get a copy in their code bundle
    ),
    HParam("freeze_backbone", bool, False, "Train only the new classification head."),
    HParam(
        "feature_cache",
        bool,
        True,
        "With freeze_backbone: compute the frozen backbone's features once and train the "
        "head on them (epochs then cost almost nothing).",
    ),
    HParam(
        "feature_views",
        int,
        1,
        "Feature cache: 1 caches the centre crop (no random augmentation); N caches N random "
        "augmentations per image, and epoch e trains on view e mod N.",
        check=between(1, 1000),
    ),
    HParam("epochs", int, 10, "Maximum number of epochs.", check=between(1, 100_000)),
    HParam("batch_size", int, 32, "Images per batch.", check=between(1, 65_536)),
    HParam("learning_rate", float, 0.01, "Initial learning rate.", check=positive),
    HParam("momentum", float, 0.9, "SGD momentum (AdamW: beta1).", check=_momentum),
    HParam("weight_decay", float, 1e-4, "Weight decay.", check=non_negative),
    HParam("optimizer", str, "sgd", "sgd or adamw.", choices=("sgd", "adamw")),
    HParam(
        "lr_schedule",
        str,
        "cosine",
        "cosine (to zero over `epochs`) or constant.",
        choices=("cosine", "constant"),
    ),
    HParam("image_size", int, 224, "Side of the square input, in pixels.", check=between(16, 4096)),
    HParam(
        "early_stopping_patience",
        int,
        3,
        "Stop after this many epochs without a better `monitor`; 0 disables.",
        check=between(0, 100_000),
    ),
    HParam(
        "monitor",
        str,
        "val_loss",
        "The metric whose best epoch is saved (and that early stopping watches): val_loss "
        "(lower is better) or val_accuracy (higher is better).",
        choices=("val_loss", "val_accuracy"),
    ),
    HParam(
        "num_workers",
        (int, str),
        "auto",
        'Data-loading worker processes (0: load in the main one; "auto": from the CPU count).',
        check=_workers,
    ),
)


def train(ctx: Context) -> None:
    import torch

    from inflame.data.dataset import ImageFolderDataset
    from inflame.training import evaluate, fit
    from inflame.vision import (
        build_classifier,
        decode_side,
        eval_transform,
        save_classifier,
        train_transform,
        warm_start,
    )

    hp = ctx.hparams
    size = hp["image_size"]
    side = decode_side(size)  # images are decoded once at this size (the decode cache)
    train_set = ImageFolderDataset(
        ctx.data["train"], train_transform(size), bad_images=ctx.bad_images, decode_size=side
    )

    def held_out(name: str) -> ImageFolderDataset | None:
        """The val or test set, if the spec has one, with the training set's classes."""
        if name not in ctx.data:
            return None
        return ImageFolderDataset(
            ctx.data[name],
            eval_transform(size),
            classes=train_set.classes,
            bad_images=ctx.bad_images,
            decode_size=side,
        )

    val_set = held_out("val")

    pretrained = hp["pretrained"]
    if isinstance(pretrained, str):
        pretrained = ctx.resolve_path(pretrained)
        if not pretrained.is_file():
            raise InflameError(
                f"hyperparameters.pretrained: weights file {pretrained} does not exist (a "
                "path is relative to the spec's folder). Set `pretrained` to true, false "
                "or an existing weights file."
            )
        ctx.record_input("pretrained_weights", pretrained)
    model = build_classifier(
        hp["architecture"],
        len(train_set.classes),
        pretrained=pretrained,
        freeze_backbone=hp["freeze_backbone"],
    )
    if ctx.init_from is not None:  # `inflame train --init-from RUN`: the parent's weights
        ctx.record("warm_start", warm_start(model, ctx.init_from, train_set.classes))
    params = [p for p in model.parameters() if p.requires_grad]
    if hp["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=hp["learning_rate"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    else:
        optimizer = torch.optim.AdamW(
            params,
            lr=hp["learning_rate"],
            betas=(hp["momentum"], 0.999),
            weight_decay=hp["weight_decay"],
        )
    scheduler = None
    if hp["lr_schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp["epochs"])

    workers = None if hp["num_workers"] == "auto" else hp["num_workers"]
    net, train_data, val_data = model, train_set, val_set
    if hp["freeze_backbone"] and hp["feature_cache"]:
        net, train_data, val_data = _cached_features(ctx, model, train_set, val_set, workers)

    result = fit(
        ctx,
        net,
        train_data,
        val_data,
        epochs=hp["epochs"],
        batch_size=hp["batch_size"],
        optimizer=optimizer,
        scheduler=scheduler,
        early_stopping_patience=hp["early_stopping_patience"] or None,
        monitor=hp["monitor"],
        num_workers=workers,
    )
    if net is not model:  # the head trained on cached features goes back on its backbone
        from inflame.vision import set_head

        set_head(model, result.model)

    test_set = held_out("test")
    if test_set is not None:
        scores = evaluate(model, test_set, batch_size=hp["batch_size"], performance=ctx.performance)
        ctx.log_metrics({"test_loss": scores["loss"], "test_accuracy": scores["accuracy"]})
    if ctx.is_main:
        save_classifier(
            model,
            ctx.output_dir,
            architecture=hp["architecture"],
            classes=train_set.classes,
            image_size=size,
        )


def _cached_features(
    ctx: Context, model: Any, train_set: Any, val_set: Any, workers: int | None
) -> tuple[Any, Any, Any]:
    """The head and its training data: the frozen backbone's features, computed once."""
    import sys

    from inflame.data.dataset import ImageFolderDataset
    from inflame.training.features import cached_features
    from inflame.training.loading import auto_workers
    from inflame.vision import eval_transform, get_head

    hp = ctx.hparams
    size, views = hp["image_size"], hp["feature_views"]
    if views == 1:  # centre crops: the same images as validation sees
        source = ImageFolderDataset(
            ctx.data["train"],
            eval_transform(size),
            bad_images=ctx.bad_images,
            decode_size=train_set.decode_size,
        )
        if ctx.is_main:
            print(
                "note: freeze_backbone trains the head on cached features of centre crops, "
                "without random augmentation (`feature_views = N` caches N augmented views; "
                "`feature_cache = false` augments every epoch and recomputes the backbone)",
                file=sys.stderr,
            )
    else:
        source = train_set

    def features(dataset: ImageFolderDataset, n_views: int, crops: str) -> Any:
        key = None if dataset.content_key is None else {"data": dataset.content_key}
        if key is not None:
            key.update(crops=crops, size=size, architecture=hp["architecture"])
        return cached_features(
            model,
            dataset,
            key,
            views=n_views,
            seed=ctx.seed,
            device=ctx.device,
            batch_size=hp["batch_size"],
            num_workers=auto_workers(ctx.device) if workers is None else workers,
        )

    train_data = features(source, views, "centre" if views == 1 else "random")
    val_data = features(val_set, 1, "centre") if val_set is not None else None
    return get_head(model), train_data, val_data


if __name__ == "__main__":
    run_app(__file__)
