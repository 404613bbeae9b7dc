"""The images the compose stack test runs, built here where no registry can be pulled from.

``make stack-images`` (``python -m tests.stack.images``) and the stack test's session fixture call
the same ``build()``:

1. a local Debian base, made with debootstrap from Debian's packages and imported with
   ``docker import``; cached as ``mlpulse-local/debian:<suite>-<key>``, the key a hash of the
   suite, mirror, package list and the host's local CA certificates, so it is made once per
   machine and reused while none of them changes;
2. every image the test starts, with ``docker-compose build`` over the user's compose file and the
   test's override (tests/stack/docker-compose.local.yml): our four Dockerfiles with
   ``BASE_IMAGE`` set to the local base, Prometheus and Alertmanager from Debian's packages.

What cannot be built here (no Debian package, no registry) is listed in ``NOT_BUILT``; the test
leaves those services out and their contract tests cover them (docs/compose.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE = ROOT / "tests" / "stack" / "docker-compose.local.yml"
SUITE = os.environ.get("MLPULSE_DEBIAN_SUITE", "bookworm")
# Debian's official mirror; a machine with another one sets MLPULSE_DEBIAN_MIRROR.
MIRROR = os.environ.get("MLPULSE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the python:3.11-slim-bookworm image gives our Dockerfiles: python 3.11 with pip (a venv on
# PATH, since Debian's own python refuses `pip install` outside one), CA certificates, useradd.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Local CA certificates of the host (Debian's place for them) are trusted by the base too, so
# apt and pip inside a build work behind a TLS-inspecting egress proxy like the host does.
LOCAL_CA_DIR = Path(os.environ.get("MLPULSE_LOCAL_CA_DIR", "/usr/local/share/ca-certificates"))
VENV = "/opt/python"
# The services the test starts, in the order their healthchecks are awaited.
SERVICES = ("model-service", "drift-exporter", "alert-webhook", "prometheus", "alertmanager")
NOT_BUILT = {
    "grafana": "no Debian package of Grafana and no registry to pull grafana/grafana from",
    "es-certs": "the Elasticsearch image (elasticsearch-certutil) has no Debian package",
    "elasticsearch": "no Debian package of Elasticsearch 8 and no registry",
    "logstash": "no Debian package of Logstash 8 and no registry",
    "kibana": "no Debian package of Kibana 8 and no registry",
    "elastic-setup": "builds on the base, but its job needs Elasticsearch and Kibana, which cannot run here",
}
# Passed to the builds when set, so a machine behind an explicit proxy can build (never stored).
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def log(message: str) -> None:
    print(f"[stack-images] {message}", file=sys.stderr, flush=True)


def local_cas() -> list[Path]:
    return sorted(LOCAL_CA_DIR.glob("*.crt")) if LOCAL_CA_DIR.is_dir() else []


def base_tag() -> str:
    digest = hashlib.sha256()
    for part in (SUITE, MIRROR, *PACKAGES, VENV):
        digest.update(part.encode() + b"\0")
    for ca in local_cas():
        digest.update(ca.read_bytes())
    return f"mlpulse-local/debian:{SUITE}-{digest.hexdigest()[:12]}"


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def _configure(rootfs: Path) -> None:
    """What a Debian container image has beyond a debootstrap: no daemon starts on install, the
    local CAs, a virtual environment with pip that trusts Debian's CA store, no package cache."""
    policy = rootfs / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# A container: packages never start their daemons.\nexit 101\n")
    policy.chmod(0o755)
    for ca in local_cas():
        shutil.copyfile(ca, rootfs / "usr" / "local" / "share" / "ca-certificates" / ca.name)
    subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True)
    subprocess.run(["chroot", str(rootfs), "python3", "-m", "venv", VENV], check=True)
    (rootfs / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
                                             "no-cache-dir = true\n")
    for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()


def build_base() -> str:
    """The local Debian base image's tag, made with debootstrap unless it is already there."""
    tag = base_tag()
    if image_exists(tag):
        log(f"base {tag}: cached")
        return tag
    missing = [tool for tool in ("debootstrap", "chroot", "tar") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        raise RuntimeError(f"making the local base needs root and {', '.join(missing) or 'debootstrap'}: "
                           "apt-get install debootstrap, run as root")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlpulse-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                        str(rootfs), MIRROR], check=True, stdout=subprocess.DEVNULL)
        _configure(rootfs)
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import",
                        "--change", f"ENV PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--change", "ENV LANG=C.UTF-8",
                        "--change", 'CMD ["/bin/bash"]',
                        "-", tag], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        tar.stdout.close()
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrapped tree failed")
    log(f"base {tag}: made in {time.monotonic() - started:.0f} s")
    return tag


def compose_command(env_file: Path, project: str | None = None) -> list[str]:
    """docker-compose over the user's file and the test's override (1.29 here; v2 takes the same)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("the stack test runs Debian's docker-compose 1.29: apt-get install docker-compose")
    command = [binary, "--env-file", str(env_file),
               "-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE)]
    return command + (["-p", project] if project else [])


def build_images(base: str, env_file: Path) -> None:
    started = time.monotonic()
    args = [f"--build-arg={name}={os.environ[name]}" for name in PROXY_VARIABLES if os.environ.get(name)]
    env = {**os.environ, "MLPULSE_LOCAL_BASE": base}
    subprocess.run(compose_command(env_file) + ["build", *args, *SERVICES], cwd=ROOT, env=env, check=True)
    log(f"images of {', '.join(SERVICES)}: built in {time.monotonic() - started:.0f} s")


def build(env_file: Path) -> str:
    """Base and images; returns the base's tag (the override reads it as MLPULSE_LOCAL_BASE)."""
    for name, why in NOT_BUILT.items():
        log(f"not built: {name}: {why}")
    base = build_base()
    build_images(base, env_file)
    return base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.stack.images", description=__doc__.split("\n")[0])
    ap.add_argument("--base-only", action="store_true", help="make (or find) the local Debian base only")
    args = ap.parse_args(argv)
    if args.base_only:
        print(build_base())
        return 0
    from tests.stack.stackenv import write_stack_env

    with tempfile.TemporaryDirectory(prefix="mlpulse-stack-env-") as tmp:
        print(build(write_stack_env(Path(tmp)).env_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
