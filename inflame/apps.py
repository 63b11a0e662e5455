"""Find and load an app: a model_zoo name or a path to a folder (or file) holding app.py.

An app is plain Python. It defines `train(ctx)` and may declare `HPARAMS`, a sequence of
`inflame.HParam`. `python app.py` still works on its own through `inflame.run_app`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from inflame.errors import InflameError, SpecError, did_you_mean
from inflame.hparams import HParam, check_declarations

APP_FILE = "app.py"
ZOO_ENV = "INFLAME_MODEL_ZOO"


@dataclass(frozen=True)
class App:
    name: str
    folder: Path
    file: Path
    module: ModuleType
    hparams: tuple[HParam, ...] | None  # None: the app declares nothing; values pass unchecked

    @property
    def train(self) -> Callable[[Any], Any]:
        return self.module.train


def zoo_dirs() -> list[Path]:
    """Where model_zoo apps are looked up: $INFLAME_MODEL_ZOO entries, then the bundled zoo."""
    dirs = [Path(p) for p in os.environ.get(ZOO_ENV, "").split(os.pathsep) if p]
    spec = importlib.util.find_spec("model_zoo")
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def zoo_apps() -> dict[str, Path]:
    """Every app in the zoo, by name (first one wins)."""
    found: dict[str, Path] = {}
    for zoo in zoo_dirs():
        if zoo.is_dir():
            for child in sorted(zoo.iterdir()):
                if (child / APP_FILE).is_file():
                    found.setdefault(child.name, child)
    return found


def find_app(ref: str) -> Path:
    """The app.py file for a zoo name or a path (folder or .py file)."""
    path = Path(ref).expanduser()
    if path.is_absolute() or ref.endswith(".py") or "/" in ref:
        file = path if path.suffix == ".py" else path / APP_FILE
        if not file.is_file():
            raise SpecError(
                f"App not found: {file} does not exist. `job.app` must name a model_zoo app "
                f"({', '.join(zoo_apps()) or 'none installed'}) or a folder holding {APP_FILE}."
            )
        return file.resolve()
    apps = zoo_apps()
    if ref not in apps:
        raise SpecError(
            f"Unknown app `{ref}` in `job.app`.{did_you_mean(ref, apps)} Zoo apps: "
            f"{', '.join(apps) or 'none'}. For your own app, give the path of the folder "
            f"holding {APP_FILE}, relative to the spec and starting with ./ (a bare name is a "
            f'zoo app): `app = "./{ref}"`; or scaffold one with `inflame init DIR`.'
        )
    return (apps[ref] / APP_FILE).resolve()


def load_app(ref: str) -> App:
    """Import the app module and check that it follows the contract."""
    file = find_app(ref)
    folder = file.parent
    name = folder.name if file.name == APP_FILE else file.stem
    module_name = f"inflame_app_{name.replace('-', '_')}"
    code = _code_digest(folder, file)
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(file):
        if getattr(loaded, _CODE_ATTR, None) == code:
            module = loaded
        else:  # edited since this process imported it (a notebook, a service): import again
            _forget_modules_in(folder)
            module = _import_file(module_name, file)
    else:
        module = _import_file(module_name, file)
    setattr(module, _CODE_ATTR, code)
    if not callable(getattr(module, "train", None)):
        raise InflameError(
            f"App {file} has no `train(ctx)` function. An app must define `def train(ctx):` "
            "(see model_zoo/fowl_classifier/app.py)."
        )
    declared = getattr(module, "HPARAMS", None)
    if declared is not None:
        declared = tuple(declared)
        bad = [p for p in declared if not isinstance(p, HParam)]
        if bad:
            raise InflameError(
                f"App {file}: HPARAMS must hold inflame.HParam objects, found {bad[0]!r}."
            )
        check_declarations(declared, str(file))
    return App(name=name, folder=folder, file=file, module=module, hparams=declared)


_CODE_ATTR = "__inflame_code_sha256__"


def _code_digest(folder: Path, file: Path) -> str:
    """The app file and the Python files beside it, by name and content: what a process
    that imported the app must import again when it changed (the manifest hashes the files
    on disk, so the code that runs must be that code)."""
    digest = hashlib.sha256()
    for path in sorted({file, *folder.glob("*.py")}):
        try:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        except OSError:
            digest.update(path.name.encode() + b"\0unreadable\0")
    return digest.hexdigest()


def _forget_modules_in(folder: Path) -> None:
    """Drop the modules imported from `folder` (an app's siblings), so that importing the
    app again imports them again too."""
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if where and Path(where).parent == folder:
            del sys.modules[name]


def _import_file(module_name: str, file: Path) -> ModuleType:
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # let an app import its sibling modules
    spec = importlib.util.spec_from_file_location(module_name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(file)]
        where = f"{file}:{frames[-1].lineno}" if frames else str(file)
        if isinstance(exc, SyntaxError) and exc.lineno:
            where = f"{exc.filename}:{exc.lineno}"
        raise InflameError(
            f"App {file} failed to import ({where}): {type(exc).__name__}: {exc}. "
            "Fix the app, then run again; `python app.py` shows the full traceback."
        ) from exc
    return module
