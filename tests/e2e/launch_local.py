"""A real ``ray up`` on this machine: sshd on the loopback, a dedicated user, cluster-local.yaml.

Used by tests/e2e/test_launch_cluster.py. Everything here runs as root and is undone on exit:

- the user ``ww-launch`` (created if missing, removed again if this module created it) owns every
  Ray process of the launched cluster, so the ``ray stop`` that ``ray up``/``ray down`` run ends
  those processes and no other Ray session of the host (other sessions run as root);
- its ``~/.bashrc`` puts the Python environment running the tests on PATH (Ray runs every remote
  command as ``bash --login -c -i 'source ~/.bashrc; ...'``). That environment usually lives under
  root's home (a venv whose interpreter is in ``/root/.pyenv``, or CI's venv in its clone), which a
  non-root user may not traverse: the directories on the way get the search bit (``o+x``, no read
  bit, so nothing becomes listable) and have their modes restored on exit;
- one ``sshd`` (our own config and host key, not the system's) listens on 127.0.0.1 and 127.0.0.2
  at a port off 22, which the user's ``~/.ssh/config`` names, since Ray has no ssh-port setting.

Processes are ended by pid: the sshd this module started, and whatever still runs as ``ww-launch``
after ``ray down`` (only this module starts processes as that user).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
USER = "ww-launch"
SSH_PORT = 26022
CONFIG = REPO / "cluster-local.yaml"


class LaunchSetupError(RuntimeError):
    pass


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)


class LocalCluster:
    """Set up (``__enter__``) and tear down (``__exit__``) what cluster-local.yaml needs."""

    def __init__(self, workdir: Path, log=print):
        self.workdir = workdir
        self.log = log
        self.created_user = False
        self.modes: dict[Path, int] = {}
        self.sshd: subprocess.Popen | None = None
        self.home = Path("/home") / USER
        self.env_bin = Path(sys.prefix) / "bin"

    # --- set-up ------------------------------------------------------------------------------------
    def __enter__(self) -> LocalCluster:
        try:
            self._user()
            self._grant_access()
            self._ssh_keys()
            self._bashrc()
            self._start_sshd()
            self._check_login()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _user(self) -> None:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            _run(["useradd", "--create-home", "--shell", "/bin/bash", USER])
            self.created_user = True
        # '*' instead of useradd's '!': sshd without PAM refuses a locked account even for keys
        _run(["usermod", "--password", "*", USER])
        entry = pwd.getpwnam(USER)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)

    def _grant_access(self) -> None:
        """Give the user the search bit on every directory leading to the env and the checkout."""
        targets = {Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent.parent, REPO}
        for target in targets:
            for directory in [target, *target.parents]:
                mode = directory.stat().st_mode
                if not mode & stat.S_IXOTH:
                    self.modes.setdefault(directory, stat.S_IMODE(mode))
                    directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)

    def _as_user(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)

    def _ssh_keys(self) -> None:
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        self._as_user(ssh)
        key = ssh / "id_ed25519"
        if not key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", USER, "-f", str(key)])
        (ssh / "authorized_keys").write_text((ssh / "id_ed25519.pub").read_text())
        (ssh / "config").write_text(
            f"Host 127.0.0.1 127.0.0.2\n  Port {SSH_PORT}\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        )
        for path in ssh.iterdir():
            path.chmod(0o600)
            self._as_user(path)

    def _bashrc(self) -> None:
        raytmp = self.home / "raytmp"
        raytmp.mkdir(exist_ok=True)
        self._as_user(raytmp)
        bashrc = self.home / ".bashrc"
        bashrc.write_text(
            "# written by tests/e2e/launch_local.py: the env cluster-local.yaml expects\n"
            f"export PATH={shlex.quote(str(self.env_bin))}:$PATH\n"
            "export PYTHONPATH=$HOME/ww\n"
            f"export RAY_TMPDIR={raytmp}\n"
            "export RAY_UP_enable_autoscaler_v2=0\n"
            "export RAY_AUTH_MODE=disabled RAY_TRAIN_V2_ENABLED=1\n"
            "export RAY_USAGE_STATS_ENABLED=0\n"
            "export RAY_memory_usage_threshold=0.98  # the host is shared: its load is not ours\n"
        )
        self._as_user(bashrc)

    def _start_sshd(self) -> None:
        sshd = Path("/usr/sbin/sshd")
        if not sshd.exists():
            raise LaunchSetupError("no /usr/sbin/sshd: apt-get install -y openssh-server rsync (.ci/run does)")
        self.sshd_dir = Path(tempfile.mkdtemp(prefix="ww-sshd-"))
        hostkey = self.sshd_dir / "host_ed25519"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)])
        config = self.sshd_dir / "sshd_config"
        config.write_text(
            f"Port {SSH_PORT}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {hostkey}\n"
            f"PidFile {self.sshd_dir / 'sshd.pid'}\nAllowUsers {USER}\nPermitRootLogin no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "AuthorizedKeysFile .ssh/authorized_keys\nMaxStartups 100:30:200\nMaxSessions 100\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        self.sshd_log = self.sshd_dir / "sshd.log"
        self.sshd = subprocess.Popen(
            [str(sshd), "-D", "-f", str(config), "-E", str(self.sshd_log)], stdin=subprocess.DEVNULL
        )
        time.sleep(0.5)
        if self.sshd.poll() is not None:
            raise LaunchSetupError(f"sshd exited: {self.sshd_log.read_text() if self.sshd_log.exists() else ''}")

    def _check_login(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            probe = self.user_shell(
                f"ssh -o BatchMode=yes {USER}@127.0.0.2 "
                '"bash --login -c -i \'source ~/.bashrc; python -c \\"import ray, torch\\"\'"',
                timeout=60,
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LaunchSetupError(f"ssh {USER}@127.0.0.2 with the env failed:\n{probe.stdout}\n{probe.stderr}")
            time.sleep(1)

    # --- use ---------------------------------------------------------------------------------------
    def user_shell(
        self,
        command: str,
        *,
        timeout: float,
        check: bool = True,
        cwd: Path | None = None,
        background: bool = False,
        stdout=None,
    ):
        """``command`` in a login shell of the dedicated user (its ~/.bashrc env), in ``cwd``."""
        full = f"cd {shlex.quote(str(cwd or self.home))} && source ~/.bashrc && {command}"
        argv = [
            "runuser",
            "-u",
            USER,
            "--",
            "env",
            "-i",
            f"HOME={self.home}",
            f"USER={USER}",
            f"LOGNAME={USER}",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "TERM=dumb",
            "bash",
            "-c",
            full,
        ]
        if background:
            return subprocess.Popen(argv, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise LaunchSetupError(
                f"{command!r} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def user_dir(self, name: str) -> Path:
        """A directory of the user's that both nodes (one host) see: a shared root."""
        path = self.home / name
        path.mkdir(exist_ok=True)
        self._as_user(path)
        return path

    def user_pids(self) -> list[int]:
        out = subprocess.run(["ps", "-u", str(self.uid), "-o", "pid="], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def raylet_pid(self, node_ip: str) -> int | None:
        """The pid of the raylet of the node at ``node_ip`` (one raylet per node)."""
        for pid in self.user_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"/raylet") and f"--node_ip_address={node_ip}".encode() in cmdline:
                return pid
        return None

    # --- tear-down ---------------------------------------------------------------------------------
    def close(self) -> None:
        if hasattr(self, "uid"):
            self._end_user_processes()
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            try:
                self.sshd.wait(10)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        for directory, mode in self.modes.items():
            directory.chmod(mode)
        self.modes.clear()
        if hasattr(self, "uid"):  # what Ray's launcher left in /tmp as the user (config cache, ssh sockets)
            for entry in Path("/tmp").iterdir():
                try:
                    if entry.lstat().st_uid == self.uid:
                        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                except OSError:
                    pass
        if self.created_user:
            subprocess.run(["userdel", "--remove", USER], capture_output=True)
            self.created_user = False

    def _end_user_processes(self) -> None:
        """Whatever ``ray down`` left running as the dedicated user (only this module starts those)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.user_pids()
            if not pids:
                return
            self.log(f"ending {len(pids)} leftover process(es) of {USER} with {sig.name}")
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.user_pids() and time.monotonic() < deadline:
                time.sleep(0.2)
