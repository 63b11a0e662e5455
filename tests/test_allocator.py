"""inflame.allocator against real preloads: tiny shared libraries built with gcc and named like
tcmalloc and jemalloc, preloaded by a re-exec in a subprocess and seen in its /proc/self/maps.
Nothing here needs tcmalloc to be installed, nor is changed by it being installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inflame import allocator
from inflame.allocator import (
    ACTIVE_VAR,
    ENV_VAR,
    find_allocator,
    install_hint,
    loaded_allocator,
    preload_env,
    search_folders,
)
from inflame.errors import InflameError

ROOT = Path(__file__).parents[1]

# Prints "start" on every (re-)execution, then what the final process runs with.
CHILD = """
import os, sys
print("start", flush=True)
from inflame.allocator import loaded_allocator, reexec_with_allocator
reexec_with_allocator()
print("loaded", loaded_allocator())
print("marker", os.environ.get("INFLAME_ALLOCATOR_ACTIVE", ""))
print("preload", os.environ.get("LD_PRELOAD", ""))
with open("/proc/self/maps") as maps:
    print("maps", *sorted({line.split()[-1] for line in maps if "malloc" in line}))
"""


def build_library(folder: Path, name: str) -> Path:
    """A real (empty but loadable) shared library called `name`, built with gcc."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the shared libraries these tests preload: install it")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{name}.c"
    source.write_text("int inflame_fake_allocator(void) { return 42; }\n")
    library = folder / name
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True
    )
    return library


@pytest.fixture(scope="module")
def fake_tcmalloc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("tcmalloc"), "libtcmalloc_minimal.so.4")


@pytest.fixture(scope="module")
def fake_jemalloc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_library(tmp_path_factory.mktemp("jemalloc"), "libjemalloc.so.2")


def run_child(**extra: str) -> tuple[list[str], dict[str, str], subprocess.CompletedProcess[str]]:
    """Run CHILD with a clean allocator environment plus `extra`: its "start" lines, and its
    final `key value` lines as a dict."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (ENV_VAR, ACTIVE_VAR, "LD_PRELOAD")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "extra-arg"],
        env={**env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    starts = [line for line in lines if line == "start"]
    report = dict(line.split(" ", 1) if " " in line else (line, "") for line in lines)
    return starts, report, result


def test_reexec_preloads_the_library_once(fake_tcmalloc: Path) -> None:
    starts, report, _ = run_child(**{ENV_VAR: str(fake_tcmalloc)})
    assert len(starts) == 2  # the first process, then exactly one re-exec
    real = os.path.realpath(fake_tcmalloc)
    assert report["maps"].split() == [real]
    assert report["loaded"] == f"tcmalloc ({real})"
    assert report["marker"] == str(fake_tcmalloc)
    assert report["preload"] == str(fake_tcmalloc)


def test_reexec_keeps_other_preloads_and_arguments(fake_tcmalloc: Path, tmp_path: Path) -> None:
    other = build_library(tmp_path, "libother.so")
    script = (
        "import os, sys; from inflame.allocator import reexec_with_allocator as r; r();"
        " print(sys.argv, os.environ['LD_PRELOAD'])"
    )
    env = {**os.environ, ENV_VAR: str(fake_tcmalloc), "LD_PRELOAD": str(other)}
    env.pop(ACTIVE_VAR, None)
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script, "a b", "--flag"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == f"['-c', 'a b', '--flag'] {fake_tcmalloc}:{other}"


@pytest.mark.parametrize("value", ["off", "none", "system", "OFF"])
def test_off_none_and_system_keep_glibc(value: str) -> None:
    starts, report, _ = run_child(**{ENV_VAR: value})
    assert len(starts) == 1
    assert report["loaded"].startswith("glibc")
    assert report["maps"] == "" and report["marker"] == ""


def test_no_reexec_when_the_library_is_already_preloaded(fake_tcmalloc: Path) -> None:
    starts, report, _ = run_child(**{ENV_VAR: str(fake_tcmalloc), "LD_PRELOAD": str(fake_tcmalloc)})
    assert len(starts) == 1
    assert report["loaded"] == f"tcmalloc ({os.path.realpath(fake_tcmalloc)})"


def test_a_malloc_the_user_preloaded_is_kept(fake_tcmalloc: Path, fake_jemalloc: Path) -> None:
    starts, report, _ = run_child(**{ENV_VAR: str(fake_tcmalloc), "LD_PRELOAD": str(fake_jemalloc)})
    assert len(starts) == 1
    assert report["loaded"] == f"jemalloc ({os.path.realpath(fake_jemalloc)})"


def test_the_marker_stops_a_loop_when_the_preload_fails(tmp_path: Path) -> None:
    # An ELF header and nothing else: the loader refuses it, the process runs without it.
    broken = tmp_path / "libtcmalloc_minimal.so.4"
    broken.write_bytes(b"\x7fELF" + bytes(60))
    starts, report, result = run_child(**{ENV_VAR: str(broken)})
    assert len(starts) == 2
    assert "cannot be preloaded" in result.stderr
    assert report["loaded"].startswith("glibc")
    assert report["marker"] == str(broken)


def test_a_set_marker_means_no_reexec(fake_tcmalloc: Path) -> None:
    starts, report, _ = run_child(**{ENV_VAR: str(fake_tcmalloc), ACTIVE_VAR: "1"})
    assert len(starts) == 1
    assert report["maps"] == ""


def test_a_missing_path_is_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "libtcmalloc.so.4"
    with pytest.raises(InflameError) as error:
        find_allocator({ENV_VAR: str(missing)})
    message = str(error.value)
    assert "\n" not in message
    for fragment in (ENV_VAR, str(missing), "does not exist", "`auto`", "`off`"):
        assert fragment in message


def test_a_file_that_is_not_a_library_is_a_clean_error(tmp_path: Path) -> None:
    text = tmp_path / "libtcmalloc.so.4"
    text.write_text("not a library")
    with pytest.raises(InflameError, match="not a shared library"):
        find_allocator({ENV_VAR: str(text)})


def test_an_unknown_value_suggests_the_closest() -> None:
    with pytest.raises(InflameError, match="Did you mean `tcmalloc`"):
        find_allocator({ENV_VAR: "tcmaloc"})


def test_preload_env_is_idempotent_and_keeps_entries(fake_tcmalloc: Path) -> None:
    env = {"LD_PRELOAD": "/a/liba.so /b/libb.so", "OTHER": "1"}
    once = preload_env(env, fake_tcmalloc)
    assert once["LD_PRELOAD"] == f"{fake_tcmalloc}:/a/liba.so:/b/libb.so"
    assert once["OTHER"] == "1"
    assert env["LD_PRELOAD"] == "/a/liba.so /b/libb.so"  # the input is not changed
    assert preload_env(once, fake_tcmalloc) == once
    assert preload_env({}, fake_tcmalloc) == {"LD_PRELOAD": str(fake_tcmalloc)}
    listed = {"LD_PRELOAD": f"/a/liba.so:{fake_tcmalloc}"}
    assert preload_env(listed, fake_tcmalloc) == listed


def test_preload_env_tunes_jemalloc_unless_told(fake_jemalloc: Path) -> None:
    tuned = preload_env({}, fake_jemalloc)
    assert tuned == {"LD_PRELOAD": str(fake_jemalloc), "MALLOC_CONF": allocator.JEMALLOC_CONF}
    assert preload_env(tuned, fake_jemalloc) == tuned
    assert preload_env({"MALLOC_CONF": "narenas:2"}, fake_jemalloc)["MALLOC_CONF"] == "narenas:2"


def test_search_prefers_tcmalloc_minimal_then_tcmalloc_then_jemalloc(
    fake_tcmalloc: Path, tmp_path: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    folders = [first, second]
    assert find_allocator({}, folders) is None
    shutil.copy(fake_tcmalloc, first / "libjemalloc.so.2")
    assert find_allocator({}, folders) == first / "libjemalloc.so.2"
    shutil.copy(fake_tcmalloc, second / "libtcmalloc.so.4")
    assert find_allocator({}, folders) == second / "libtcmalloc.so.4"
    shutil.copy(fake_tcmalloc, second / "libtcmalloc_minimal.so.4")
    assert find_allocator({ENV_VAR: "auto"}, folders) == second / "libtcmalloc_minimal.so.4"
    assert find_allocator({ENV_VAR: "jemalloc"}, folders) == first / "libjemalloc.so.2"
    assert find_allocator({ENV_VAR: "off"}, folders) is None


def test_a_named_allocator_that_is_missing_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(InflameError) as error:
        find_allocator({ENV_VAR: "jemalloc"}, [tmp_path])
    assert "libjemalloc.so.2" in str(error.value) and str(tmp_path) in str(error.value)
    assert "apt install libjemalloc2" in str(error.value)


def test_search_folders_start_with_the_environment_and_read_ld_so_conf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ld.so.conf.d").mkdir()
    (tmp_path / "ld.so.conf").write_text("# comment\ninclude ld.so.conf.d/*.conf\n/opt/top\n")
    (tmp_path / "ld.so.conf.d" / "a.conf").write_text("/opt/from-include  # trailing\n")
    (tmp_path / "ld.so.conf.d" / "b.txt").write_text("/opt/not-a-conf\n")
    monkeypatch.setattr(allocator, "_LD_SO_CONF", tmp_path / "ld.so.conf")
    env = {"CONDA_PREFIX": "/conda/env", "LD_LIBRARY_PATH": "/x/lib::relative:/y/lib"}
    folders = search_folders(env)
    assert folders[0] == Path("/conda/env/lib")
    assert Path("relative") not in folders and Path("/y/lib") in folders
    assert folders.index(Path("/x/lib")) < folders.index(Path("/usr/lib"))
    assert folders[-2:] == [Path("/opt/from-include"), Path("/opt/top")]
    assert Path("/opt/not-a-conf") not in folders
    assert len(folders) == len(set(folders))


def test_loaded_allocator_reads_maps(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    libc = "7f00-7f01 r-xp 00000000 08:01 42  /usr/lib/x86_64-linux-gnu/libc.so.6"
    jemalloc = "7f02-7f03 r-xp 00000000 08:01 43  /usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
    maps.write_text(f"5600-5601 r--p 00000000 00:00 0  [heap]\n{libc}\n")
    assert loaded_allocator(maps) == "glibc (/usr/lib/x86_64-linux-gnu/libc.so.6)"
    maps.write_text(f"{libc}\n{jemalloc}\n")
    assert loaded_allocator(maps) == "jemalloc (/usr/lib/x86_64-linux-gnu/libjemalloc.so.2)"
    assert loaded_allocator(tmp_path / "no-proc") == "system"
    assert loaded_allocator().split()[0] in ("glibc", "tcmalloc", "jemalloc", "mimalloc", "musl")


def test_install_hint_is_one_line() -> None:
    hint = install_hint({})
    assert "\n" not in hint and hint.startswith("tip: `apt install libtcmalloc-minimal4`")
    assert f"{ENV_VAR}=off" in hint
    assert install_hint({"CONDA_PREFIX": "/c"}).startswith("tip: `conda install")


def test_importing_it_does_not_import_torch() -> None:
    code = "import sys, inflame.allocator; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_inflame_train_runs_with_the_allocator_and_records_it(
    fake_tcmalloc: Path, write_spec, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`inflame train` re-executes itself with the library preloaded; the manifest says
    which malloc the training process ran with. With it off: glibc and the install hint."""
    import json

    spec = write_spec(hyperparameters={"epochs": 1})
    runs = {}
    for value in (str(fake_tcmalloc), "off"):
        monkeypatch.setenv("INFLAME_ALLOCATOR", value)
        result = cli("train", "--local", spec, check=True)
        run_dir = Path(result.stdout.strip().splitlines()[-1])
        manifest = json.loads((tmp_path / run_dir / "manifest.json").read_text())
        runs[value] = (manifest["performance"]["allocator"], result.stderr)
    assert runs[str(fake_tcmalloc)][0].startswith(f"tcmalloc ({fake_tcmalloc}")
    assert runs["off"][0].startswith("glibc")
    assert "tip:" not in runs["off"][1]  # the user turned it off: no advice
