"""`inflame init`: scaffold a user's own app (app.py + job.toml + demo data) from a zoo app."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from inflame import tomlfile
from inflame.apps import APP_FILE, find_app
from inflame.errors import InflameError

HEADER = """\
# Job spec for your app. Paths are relative to this file's folder.
# Train:     inflame train --local {spec}
# Override:  inflame train --local {spec} --set hyperparameters.epochs=3
# List the app's hyperparameters:  inflame train --help-app {spec}

"""


def scaffold_app(
    destination: str | Path, template: str = "fowl_classifier", demo_data: bool = True
) -> list[Path]:
    """Copy the template app's code into destination, write a job.toml pointing at
    destination/data, and (optionally) generate the demo set there. Returns written files."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise InflameError(
            f"{destination} already exists and is not empty; `inflame init` "
            "only writes into a new or empty folder."
        )
    source = find_app(template).parent
    spec_raw = tomlfile.loads((source / "job.toml").read_text(encoding="utf-8"))
    name = re.sub(r"[^a-z0-9_-]+", "-", destination.resolve().name.lower()).strip("-_") or "my-app"
    spec_raw["job"].update(
        name=name[:63], app=".", description=f"My app, scaffolded from {template}."
    )
    spec_raw["data"] = {"train": "data/train", "val": "data/val", "test": "data/test"}

    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for file in sorted(source.glob("*.py")):
        if file.name != "__init__.py":
            shutil.copy2(file, destination / file.name)
            written.append(destination / file.name)
    spec = destination / "job.toml"
    spec.write_text(HEADER.format(spec=spec) + tomlfile.dumps(spec_raw), encoding="utf-8")
    written.append(spec)
    if demo_data:
        from inflame.data.demo import make_demo_dataset

        make_demo_dataset(destination / "data")
        written.append(destination / "data")
    assert (destination / APP_FILE).exists()
    return written
