"""The model bundle: ``model.skops`` + ``metadata.json`` + ``reference.json`` in one directory.

Written by training, read by the service and the exporter. Loading checks the sha256 recorded in
the metadata and refuses any type skops does not trust by default unless the caller names it:
a bundle is code-adjacent data, and nothing on the load path unpickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from mlpulse.profile import check_profile, outdated_profile
from mlpulse.schema import FeatureSchema, OutputSpec

MODEL_FILE = "model.skops"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.json"
log = logging.getLogger(__name__)
_WARNED_OUTDATED: set[str] = set()  # bundles whose outdated profile was logged (the exporter rescans them)
# Libraries whose versions are recorded at training and compared at serving time.
TRACKED_LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "skops")


class BundleError(Exception):
    """The bundle is missing, incomplete, tampered with, or holds untrusted types."""


@dataclass
class Bundle:
    path: Path
    model: Any
    metadata: dict[str, Any]
    schema: FeatureSchema
    output: OutputSpec
    profile: dict[str, Any]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]


def library_versions() -> dict[str, str]:
    """Versions of Python and the tracked libraries in this process."""
    versions = {"python": platform.python_version()}
    for lib in TRACKED_LIBRARIES:
        try:
            versions[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            versions[lib] = "absent"
    return versions


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def save_bundle(
    directory: str | os.PathLike[str],
    model: Any,
    *,
    name: str,
    version: str,
    trained_at: str,
    schema: FeatureSchema,
    output: OutputSpec,
    profile: dict[str, Any],
    metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle; the metadata is written last, so a half-written bundle fails to load."""
    import skops.io as sio

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    check_profile(profile, schema)
    sio.dump(model, path / MODEL_FILE)
    _write_json(path / REFERENCE_FILE, profile)
    metadata = {
        "name": name,
        "version": version,
        "trained_at": trained_at,
        "model_sha256": sha256_file(path / MODEL_FILE),
        "reference_sha256": sha256_file(path / REFERENCE_FILE),
        "libraries": library_versions(),
        "features": schema.to_list(),
        "output": output.to_dict(),
        "metrics": metrics,
        **(extra or {}),
    }
    _write_json(path / METADATA_FILE, metadata)
    return path


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"no {METADATA_FILE} in bundle {directory}") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None


BUNDLE_FILES = (METADATA_FILE, MODEL_FILE, REFERENCE_FILE)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"no {what} in bundle {path.parent}") from None


def digest_of(contents: dict[str, bytes]) -> str:
    """The bundle's digest: sha256 over each file's name and sha256, in name order."""
    h = hashlib.sha256()
    for name in sorted(contents):
        h.update(f"{name}\0{hashlib.sha256(contents[name]).hexdigest()}\n".encode())
    return f"sha256:{h.hexdigest()}"


def bundle_digest(directory: str | os.PathLike[str], files: Iterable[str] = BUNDLE_FILES) -> str:
    """The digest a deployment pins (``mlpulse bundle digest DIR``): it covers the model, the
    metadata (threshold, schema, ranges) and the reference, so no part changes unnoticed."""
    path = Path(directory)
    return digest_of({name: _read(path / name, name) for name in files})


def _check_pin(path: Path, contents: dict[str, bytes], pinned: str | None) -> None:
    if pinned:
        pins = {p.strip() for p in pinned.split(",") if p.strip()}
        got = digest_of(contents)
        if got not in pins:
            raise BundleError(f"bundle {path} has digest {got}, not the pinned {', '.join(sorted(pins))}: "
                              "it was changed or is not the bundle this deployment names")


def load_reference(directory: str | os.PathLike[str], pinned: str | None = None,
                   ) -> tuple[dict[str, Any], FeatureSchema, OutputSpec, dict[str, Any]]:
    """Metadata, schema, output spec and reference profile, checked, without the model.

    The exporter needs only these; it never loads the model. ``pinned``: the ``bundle_digest``
    values (comma-separated) this bundle must match; the model file is then hashed too, never
    loaded, so one pinned digest serves the service and the exporter. Every check reads the bytes
    that are then parsed: a file swapped between the check and the use is never used.
    """
    path = Path(directory)
    names = BUNDLE_FILES if pinned else (METADATA_FILE, REFERENCE_FILE)
    contents = {name: _read(path / name, name) for name in names}
    _check_pin(path, contents, pinned)
    return _parse_reference(path, contents)


def _parse_reference(path: Path, contents: dict[str, bytes]) -> tuple[dict[str, Any], FeatureSchema, OutputSpec,
                                                                     dict[str, Any]]:
    try:
        metadata = json.loads(contents[METADATA_FILE])
    except ValueError as e:
        raise BundleError(f"{path / METADATA_FILE} is not valid JSON: {e}") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{path / METADATA_FILE} is not a JSON object")
    for key in ("name", "version", "trained_at", "features", "output", "model_sha256", "reference_sha256"):
        if key not in metadata:
            raise BundleError(f"{path / METADATA_FILE} lacks {key!r}")
    ref = path / REFERENCE_FILE
    if hashlib.sha256(contents[REFERENCE_FILE]).hexdigest() != metadata["reference_sha256"]:
        raise BundleError(f"{ref} does not match the sha256 in {METADATA_FILE}: the bundle was altered")
    try:
        schema = FeatureSchema.from_list(metadata["features"])
        output = OutputSpec.from_dict(metadata["output"])
        profile = json.loads(contents[REFERENCE_FILE])
        check_profile(profile, schema)
    except (TypeError, ValueError, KeyError) as e:
        raise BundleError(f"bundle {path} is inconsistent: {e}") from None
    reason = outdated_profile(profile)
    if reason and str(path) not in _WARNED_OUTDATED:  # still read, with its version's statistics; said once
        _WARNED_OUTDATED.add(str(path))
        log.warning("bundle %s: %s", path, reason)
    return metadata, schema, output, profile


def load_bundle(directory: str | os.PathLike[str], trusted: Iterable[str] = (), pinned: str | None = None) -> Bundle:
    """Load and verify a bundle.

    ``trusted`` names the types, beyond skops' defaults, that the model may contain. Any other
    type makes loading fail: a bundle from an unknown source cannot run code on load. ``pinned``:
    the ``bundle_digest`` (or several, comma-separated) the whole bundle must match. The model is
    loaded from the very bytes that were hashed.
    """
    import skops.io as sio

    path = Path(directory)
    contents = {name: _read(path / name, name) for name in (METADATA_FILE, REFERENCE_FILE)}
    metadata, schema, output, profile = _parse_reference(path, contents)  # JSON only: nothing runs
    model_file = path / MODEL_FILE
    contents[MODEL_FILE] = model_bytes = _read(model_file, MODEL_FILE)
    _check_pin(path, contents, pinned)
    if hashlib.sha256(model_bytes).hexdigest() != metadata["model_sha256"]:
        raise BundleError(f"{model_file} does not match the sha256 in {METADATA_FILE}: the bundle was altered")
    try:
        untrusted = set(sio.get_untrusted_types(data=model_bytes))
    except Exception as e:  # skops raises several types on a corrupt archive
        raise BundleError(f"{model_file} is not a readable skops file: {e}") from None
    refused = sorted(untrusted - set(trusted))
    if refused:
        raise BundleError(f"{model_file} contains types that are not trusted: {refused}. If you trust them, name "
                          "them (mlpulse serve --trust TYPE, or MLPULSE_TRUSTED_TYPES); a bundle made by "
                          "`mlpulse bundle create` records the scikit-learn, numpy and scipy types it holds")
    model = sio.loads(model_bytes, trusted=sorted(untrusted))
    return Bundle(path=path, model=model, metadata=metadata, schema=schema, output=output, profile=profile)
