"""The event core compiled with mypyc: built into build/native/, used only while it matches the source.

`make native` (run by `make venv`) calls `build()`: NATIVE_MODULES are compiled with mypyc into
build/native/strategy/ (never next to the sources), with manifest.json holding the sha256 of each
compiled source and of the first-party modules they import (the code they were compiled against).
`activate()`, called once by strategy/__init__.py before any submodule is imported, puts that
directory ahead of the sources on the package's path only when every hash still matches and an
extension exists for this interpreter; otherwise, or with VLMTRADER_NATIVE=0, the core runs as pure
Python and `reason` says why. The msgspec Structs these modules use live in sibling *_types.py
modules, which stay Python: msgspec reads a Struct's annotations, which mypyc does not keep.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import MutableSequence
from pathlib import Path
from types import ModuleType

import msgspec

ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = ROOT / "build" / "native"
MANIFEST = "manifest.json"
# The per-bar core and the backtest loop; the scorers and the value types (*_types.py) stay Python.
NATIVE_MODULES = (
    "strategy.bars",
    "strategy.book",
    "strategy.sim_broker",
    "strategy.target_strategy",
    "strategy.kernel",
    "strategy.risk",
    "strategy.backtest.engine",
)
# The shared runtime of the compiled modules, an extension inside the package (strategy/).
GROUP = "strategy.native_core"
SWITCH = "VLMTRADER_NATIVE"


class NativeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the compiled core was put ahead of the sources, and why not when it was not."""

    active: bool
    reason: str
    directory: str = ""

    def loaded(self) -> list[str]:
        """The NATIVE_MODULES imported so far that are compiled extensions (not .py sources)."""
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        return [
            name
            for name in NATIVE_MODULES
            if str(getattr(sys.modules.get(name), "__file__", "")).endswith(suffixes)
        ]

    def extend(self, package_path: MutableSequence[str], subpackage: str) -> None:
        """Put a subpackage's compiled modules ahead of its sources (its __init__ calls this)."""
        if self.active:
            package_path.insert(0, str(Path(self.directory, subpackage)))

    def fields(self) -> dict[str, object]:
        """The start log line's key-values: whether the imported core really is the compiled one."""
        loaded = self.loaded()
        imported = [name for name in NATIVE_MODULES if name in sys.modules]
        if self.active and len(loaded) < len(imported):
            python = sorted(set(imported) - set(loaded))
            return {"active": False, "reason": f"imported from source: {', '.join(python)}"}
        if self.active and not loaded:
            return {"active": False, "modules": 0, "reason": "no compiled module imported yet"}
        return {"active": self.active, "modules": len(loaded), "reason": self.reason}


def _source(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compiled_against(root: Path = ROOT) -> list[str]:
    """NATIVE_MODULES' sources and the first-party modules they import, as paths under root."""
    import ast  # only when building: activation reads the manifest

    paths = {_source(m, root) for m in NATIVE_MODULES}
    for module in NATIVE_MODULES:
        for node in ast.walk(ast.parse(_source(module, root).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                path = _source(node.module, root)
                if top in ("strategy", "vlm_engine", "daemon") and path.is_file():
                    paths.add(path)
    return sorted(_relative(p, root) for p in paths)


def build(*, root: Path = ROOT, out: Path | None = None) -> str | None:
    """Compile NATIVE_MODULES with mypyc into out (build/native); the reason when it fails."""
    import subprocess
    import tempfile

    out = out if out is not None else root / "build" / "native"
    files = [_relative(_source(m, root), root) for m in NATIVE_MODULES]
    setup = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        "files, group, lib, temp = sys.argv[1:5]\n"
        "setup(name='vlmtrader-native', script_args=['-q', 'build_ext', '--build-lib', lib,\n"
        "      '--build-temp', temp], ext_modules=mypycify(files.split(','), group_name=group,\n"
        "      target_dir=temp))\n"
    )
    # Hashed before compiling: a source edited during the build then fails the next check.
    sources = {path: _sha256(root / path) for path in compiled_against(root)}
    with tempfile.TemporaryDirectory() as temp:
        staged = Path(temp) / "lib"
        done = subprocess.run(
            [sys.executable, "-c", setup, ",".join(files), GROUP, str(staged), temp],
            cwd=root, capture_output=True, text=True, check=False,
            env={**os.environ, SWITCH: "0"},
        )  # fmt: skip
        if done.returncode != 0:
            lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            return f"mypyc failed: {lines[-1].strip() if lines else f'exit {done.returncode}'}"
        manifest = {
            "ext_suffix": importlib.machinery.EXTENSION_SUFFIXES[0],
            "modules": list(NATIVE_MODULES),
            "sources": sources,
        }
        (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out.exists():
            for old in sorted(out.rglob("*"), reverse=True):
                old.rmdir() if old.is_dir() else old.unlink()
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(out)
    return None


def check(*, root: Path = ROOT, switch: bool = True) -> NativeStatus:
    """Whether build/native under root matches the sources under root and this interpreter.

    Args:
        switch: honour VLMTRADER_NATIVE=0 (False when asking whether a build is up to date).
    """
    if switch and os.environ.get(SWITCH, "1") == "0":
        return NativeStatus(active=False, reason=f"{SWITCH}=0")
    directory = root / "build" / "native"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return NativeStatus(active=False, reason="not built (make native)")
    except ValueError:
        return NativeStatus(active=False, reason="build/native/manifest.json is unreadable")
    if manifest.get("modules") != list(NATIVE_MODULES):
        return NativeStatus(active=False, reason="built for other modules (make native)")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in (*NATIVE_MODULES, GROUP + "__mypyc"):
        if not directory.joinpath(*module.split(".")).with_suffix(suffix).is_file():
            return NativeStatus(
                active=False, reason=f"no {module} built for {suffix} (make native)"
            )
    for path, digest in manifest["sources"].items():
        source = root / path
        if not source.is_file() or _sha256(source) != digest:
            return NativeStatus(active=False, reason=f"{path} changed since make native")
    return NativeStatus(active=True, reason="", directory=str(directory / "strategy"))


def activate(package_path: MutableSequence[str]) -> NativeStatus:
    """Put the compiled core ahead of the sources on the strategy package's path when it matches."""
    status = check()
    if status.active:
        package_path.insert(0, status.directory)
    return status


def pure_module(module: str) -> ModuleType:
    """The Python source of a compiled module, loaded apart as `<module>__pure` (for references
    that subclass or patch the core: a compiled class cannot be subclassed by Python code)."""
    name = f"{module}__pure"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _source(module))
    if spec is None or spec.loader is None:
        msg = f"no source for {module}"
        raise ImportError(msg)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def main() -> int:
    """`make native`: build unless up to date; one line on failure, and exit 0 (pure Python then)."""
    if check(switch=False).active:
        print(f"make native: {BUILD_DIR} is up to date")
        return 0
    failed = build()
    if failed is not None:
        print(f"make native: {failed}; the core runs as pure Python", file=sys.stderr)
        return 0
    print(f"make native: compiled {', '.join(NATIVE_MODULES)} into {BUILD_DIR}")
    return 0
