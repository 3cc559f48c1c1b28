"""systemd socket activation (`--web.systemd-socket`): serve on the socket systemd passed.

The protocol of sd_listen_fds(3): LISTEN_PID names this process, LISTEN_FDS how many sockets
follow file descriptor 3. The exporter serves on the first, like exporter-toolkit's flag.
"""

import os
import socket

FIRST_FD = 3  # SD_LISTEN_FDS_START


def listening_socket() -> socket.socket:
    """The first socket systemd passed; ValueError naming what is missing if none was."""
    pid, count = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    if not pid or not count:
        raise ValueError(
            "--web.systemd-socket: no socket from systemd (LISTEN_PID and LISTEN_FDS unset);"
            " start it through cockpit-exporter.socket"
        )
    if pid != str(os.getpid()):
        raise ValueError(f"--web.systemd-socket: LISTEN_PID {pid} is another process's")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"--web.systemd-socket: LISTEN_FDS {count!r} passes no socket")
    os.set_inheritable(FIRST_FD, False)  # not to the children this process may start
    try:
        return socket.socket(fileno=FIRST_FD)
    except OSError as exc:
        raise ValueError(f"--web.systemd-socket: descriptor {FIRST_FD}: {exc.strerror}") from None
