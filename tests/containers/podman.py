"""Podman the way `make test-containers` drives it, on a machine with no container engine, no
systemd and no container registry.

Podman keeps everything in the project's cache (``<cache>/containers``): images, build layers and
volumes survive between runs, so a second run is mostly cache hits, and deleting that folder is a
clean start. Its settings are the project's own ``deploy/podman/containers.conf``. The base image is
bootstrapped from Debian's packages with mmdebstrap, from the mirrors apt is configured with.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from libs.platform import stack

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
COMPOSE_FILE = ROOT / "deploy" / "compose" / "compose.yaml"
PROJECT_LABEL = "io.podman.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# What Debian's slim images leave out too; kept out of every layer built on the base.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
JAVA_TRUST_STORE = Path("/etc/ssl/certs/java/cacerts")


class PodmanError(RuntimeError):
    pass


@dataclass
class Podman:
    """``podman`` and ``podman-compose`` with the project's configuration and storage."""

    home: Path = field(default_factory=lambda: stack.cache_dir() / "containers")

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        storage = self.home / "storage.conf"
        text = (
            "# Written by tests/containers/podman.py: Podman's storage inside the project's cache.\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.home / "storage"}"\n'
            f'runroot = "{self.home / "run"}"\n'
        )
        if not storage.exists() or storage.read_text() != text:
            storage.write_text(text)

    @property
    def env(self) -> dict[str, str]:
        return os.environ | {
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            "CONTAINERS_STORAGE_CONF": str(self.home / "storage.conf"),
        }

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """One podman command; a failure raises with podman's own words."""
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def image_exists(self, tag: str) -> bool:
        return self.run("image", "exists", tag, check=False).returncode == 0

    def image_size(self, tag: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())

    def ensure_base_image(self, tag: str | None = None) -> str:
        """The Debian base every image is built on: bootstrapped once with mmdebstrap, then cached.

        ``BATON_REBUILD_BASE=1`` bootstraps it again (to pick up Debian's updates).
        """
        codename, sources = debian_sources()
        tag = tag or f"localhost/baton-base:{codename}"
        if self.image_exists(tag) and not os.environ.get("BATON_REBUILD_BASE"):
            return tag
        command = [
            "mmdebstrap",
            "--quiet",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
            "--format=tar",
            codename,
            "-",
            *sources,
        ]
        with (
            tempfile.TemporaryFile() as stderr,
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr) as bootstrap,
        ):
            assert bootstrap.stdout is not None
            imported = subprocess.run(
                [
                    "podman",
                    "import",
                    "--change",
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--change",
                    'CMD ["bash"]',
                    "-",
                    tag,
                ],
                stdin=bootstrap.stdout,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            bootstrap.stdout.close()
            bootstrap.wait()
            stderr.seek(0)
            errors = stderr.read().decode(errors="replace")
        if bootstrap.returncode != 0 or imported.returncode != 0:
            raise PodmanError(f"bootstrapping {tag} failed:\n{errors[-3000:]}\n{imported.stderr[-3000:]}")
        return tag

    def image_id(self, tag: str) -> str | None:
        found = self.run("image", "inspect", "--format", "{{.Id}}", tag, check=False)
        return found.stdout.strip() if found.returncode == 0 else None

    def build(self, tag: str, dockerfile: str, base: str) -> None:
        """Build from the repository root; certificate stores are bind-mounted for the build only.

        The image this build replaces is removed, so the storage does not grow with every change;
        the layers of earlier stages stay as the build cache.
        """
        replaced = self.image_id(tag)
        mounts = []
        for source, target in (
            (host_ca_bundle(), "/run/host-ca.crt"),
            (JAVA_TRUST_STORE, "/run/host-java-cacerts"),
        ):
            if source.is_file():
                mounts += ["-v", f"{source}:{target}:ro"]
        self.run(
            "build",
            "--layers",
            "-f",
            str(ROOT / dockerfile),
            "-t",
            tag,
            "--build-arg",
            f"BASE_IMAGE={base}",
            *mounts,
            str(ROOT),
            timeout=1800,
        )
        if replaced and replaced != self.image_id(tag):
            self.run("rmi", replaced, check=False)


def host_ca_bundle() -> Path:
    """The CA bundle this machine's own clients trust (it may hold a local authority of its own)."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return Path("/etc/ssl/certs/ca-certificates.crt")


def debian_sources() -> tuple[str, list[str]]:
    """This machine's Debian codename and the apt sources (one-line form) of that release.

    Read from apt's own configuration (deb822 ``.sources`` and one-line ``.list`` files), keeping
    only the release's suites (``bookworm``, ``bookworm-updates``, ``bookworm-security``, ...), so the
    base image comes from the same mirrors as the host's packages, wherever those are.
    """
    release = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    codename = release["VERSION_CODENAME"].strip('"')
    lines: list[str] = []
    apt = Path("/etc/apt")
    for path in [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            lines += [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    for path in sorted((apt / "sources.list.d").glob("*.sources")):
        lines += _deb822_as_lines(path.read_text())
    sources = []
    for line in lines:
        match = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line)
        if match and (match[3] == codename or match[3].startswith(f"{codename}-")):
            sources.append(line)
    if not sources:
        raise PodmanError(f"apt has no sources for Debian {codename}")
    return codename, sources


def _deb822_as_lines(text: str) -> list[str]:
    lines = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        signed_by = fields.get("signed-by", "")
        options = f"[signed-by={signed_by}] " if signed_by.startswith("/") else ""
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                lines.append(f"deb {options}{uri} {suite} {fields.get('components', 'main')}")
    return lines


def compose_images() -> list[tuple[str, str]]:
    """(image tag, Dockerfile) of every image the Compose file builds, each once, in file order."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    images: dict[str, str] = {}
    for service in services.values():
        if "build" in service:
            images.setdefault(service["image"], service["build"]["dockerfile"])
    return list(images.items())


@dataclass
class ComposeStack:
    """One Compose project; everything it creates carries its project label, and goes by it."""

    podman: Podman
    project: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [
            shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose"),
            "--in-pod",
            "false",
            "-p",
            self.project,
            "-f",
            str(COMPOSE_FILE),
            *args,
        ]
        result = subprocess.run(
            command, env=self.podman.env | self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise PodmanError(
                f"podman-compose {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}"
            )
        return result

    def up(self, *services: str) -> None:
        """Start services without building and without their dependencies (the test orders them)."""
        self.compose("up", "-d", "--no-build", "--no-deps", *services)

    def container(self, service: str) -> str:
        names = self.podman.run(
            "ps",
            "-a",
            "--filter",
            f"label={PROJECT_LABEL}={self.project}",
            "--filter",
            f"label={SERVICE_LABEL}={service}",
            "--format",
            "{{.Names}}",
        ).stdout.split()
        if len(names) != 1:
            raise PodmanError(f"expected one container of {service}, found {names}")
        return names[0]

    def healthy(self, service: str) -> bool:
        """One run of the service's own Compose healthcheck (there are no healthcheck timers here)."""
        return self.podman.run("healthcheck", "run", self.container(service), check=False).returncode == 0

    def wait_healthy(self, services: Iterable[str], timeout: float) -> None:
        waiting = set(services)
        deadline = time.monotonic() + timeout
        while waiting:
            waiting = {s for s in waiting if not self.healthy(s)}
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not ready after {timeout}s: {sorted(waiting)}\n"
                    + "\n".join(self.logs(s) for s in sorted(waiting))
                )
            time.sleep(1)

    def wait_exit(self, service: str, timeout: float) -> int:
        return int(self.podman.run("wait", self.container(service), timeout=timeout).stdout.strip())

    def logs(self, service: str, lines: int = 40) -> str:
        with contextlib.suppress(PodmanError):
            out = self.podman.run("logs", "--tail", str(lines), self.container(service), check=False)
            return f"--- {service} ---\n{out.stdout}{out.stderr}"
        return f"--- {service}: no container ---"

    def sql(self, query: str) -> str:
        """A query run by psql inside the PostgreSQL container (its port is not published)."""
        result = self.podman.run(
            "exec",
            self.container("postgres"),
            "psql",
            "-U",
            "baton",
            "-d",
            "baton",
            "-tAc",
            query,
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    def teardown(self) -> None:
        """Remove every container, volume and network labelled with this project; also on failure."""
        with contextlib.suppress(PodmanError, subprocess.TimeoutExpired):
            self.compose("down", "-v", "-t", "0", timeout=120)
        remove_project(self.podman, self.project)


def remove_project(podman: Podman, project: str | None = None) -> None:
    """Containers, volumes and networks of a Compose project (of any project when None), by label."""
    label = f"label={PROJECT_LABEL}={project}" if project else f"label={PROJECT_LABEL}"
    containers = podman.run("ps", "-aq", "--filter", label, check=False).stdout.split()
    if containers:
        podman.run("rm", "-f", "-t", "0", *containers, check=False)
    volumes = podman.run("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
    if volumes:
        podman.run("volume", "rm", "-f", *volumes, check=False)
    networks = podman.run("network", "ls", "-q", "--filter", label, check=False).stdout.split()
    if networks:
        podman.run("network", "rm", "-f", *networks, check=False)
