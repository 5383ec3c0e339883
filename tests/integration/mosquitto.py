"""A real mosquitto on a free loopback port, with a password file and an ACL, for integration tests."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PREFIX = "vlmtrader"
ACCOUNT = "test"
USERS = {
    "daemon": "daemon-secret",  # publishes events and status, reads control and bars
    "operator": "operator-secret",  # the only one allowed to send control commands
    "viewer": "viewer-secret",  # reads everything, writes nothing
    "feeder": "feeder-secret",  # publishes bars
}

ACL = """\
# Read and write by topic pattern; %u would be the user name. Only `operator` may send commands.
user daemon
topic write {p}/+/events/#
topic write {p}/+/status
topic read {p}/+/control
topic read {p}/+/bars

user operator
topic write {p}/+/control
topic read {p}/#

user viewer
topic read {p}/#

user feeder
topic write {p}/+/bars
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """mosquitto as a subprocess; config lives in a temp dir readable by the `mosquitto` user."""

    def __init__(self, *, port: int | None = None, tls: bool = False) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vt-mosquitto-"))
        self.log_path = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        # With tls: a second listener on tls_port with a certificate signed by a throwaway CA
        # (ca.crt); clients verify the broker against it, hostname 127.0.0.1.
        self.tls_port: int | None = free_port() if tls else None
        self.ca_file = self.dir / "ca.crt"
        if tls:
            self._make_certificates()
        self._write_config()

    def _make_certificates(self) -> None:
        d = self.dir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=vlmtrader test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        )
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl(
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        )

    def _write_config(self) -> None:
        passwd = self.dir / "passwd"
        passwd.write_text("")
        for user, password in USERS.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
            )
        (self.dir / "acl").write_text(ACL.format(p=PREFIX))
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwd}\n"
            f"acl_file {self.dir / 'acl'}\n"
            "persistence false\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
        )
        if self.tls_port is not None:
            with (self.dir / "mosquitto.conf").open("a") as conf:
                conf.write(
                    f"listener {self.tls_port} 127.0.0.1\n"
                    f"cafile {self.dir / 'ca.crt'}\n"
                    f"certfile {self.dir / 'server.crt'}\n"
                    f"keyfile {self.dir / 'server.key'}\n"
                )
        self.dir.chmod(0o755)
        for f in self.dir.iterdir():
            f.chmod(0o644)
        if (
            os.geteuid() == 0
        ):  # mosquitto drops root for the `mosquitto` user: let it read its files
            with contextlib.suppress(KeyError):
                user = pwd.getpwnam("mosquitto")
                for f in (self.dir, *self.dir.iterdir()):
                    os.chown(f, user.pw_uid, user.pw_gid)
                (self.dir / "passwd").chmod(0o600)
                (self.dir / "acl").chmod(0o600)
                if (self.dir / "server.key").exists():
                    (self.dir / "server.key").chmod(0o600)

    def start(self) -> Mosquitto:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.dir / "mosquitto.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                msg = f"mosquitto exited with {self._proc.returncode}: {self.log()}"
                raise RuntimeError(msg)
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            time.sleep(0.02)
        msg = f"mosquitto did not listen on {self.port}: {self.log()}"
        raise RuntimeError(msg)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_mosquitto(*, tls: bool = False) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed: run `make mosquitto` (apt-get install mosquitto)")
    broker = Mosquitto(tls=tls).start()
    try:
        yield broker
    finally:
        broker.close()


@contextlib.contextmanager
def daemon_log_tap() -> Iterator[None]:
    """The daemon's logging set-up (with its event-sink tap), uncached so it is undone afterwards."""
    import io

    import structlog

    from daemon.log_setup import configure_logging

    saved = structlog.get_config()
    configure_logging(level="debug", fmt="json", stream=io.StringIO())
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield
    finally:
        structlog.configure(**saved)
