"""Loaded by every subprocess the tests start (through PYTHONPATH): any connection or name
lookup outside loopback raises, so a test that reaches the network fails.

It also stands in for a cluster's DNS in emulated cloud jobs: the names listed (one per line)
in the file INFLAME_TEST_HOSTS_FILE resolve to 127.0.0.1, and only once they are listed, so a
test can make a node's peers resolve late, as SageMaker's host names can.
"""

import os
import socket

_LOOPBACK = ("127.", "::1", "localhost")
_connect, _connect_ex, _getaddrinfo, _gethostbyname = (
    socket.socket.connect,
    socket.socket.connect_ex,
    socket.getaddrinfo,
    socket.gethostbyname,
)


def _cluster_hosts() -> set:
    path = os.environ.get("INFLAME_TEST_HOSTS_FILE")
    if not path:
        return set()
    try:
        with open(path) as handle:
            return {line.strip() for line in handle if line.strip()}
    except OSError:
        return set()


def _check(family: int, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else str(address)
    if family in (socket.AF_INET, socket.AF_INET6) and not str(host).startswith(_LOOPBACK):
        raise OSError(f"network guard: connection to {address!r} blocked in tests")


def _guarded_connect(self, address):
    _check(self.family, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self.family, address)
    return _connect_ex(self, address)


def _lookup(host):
    """The loopback name to look up instead of `host`, or an error."""
    if host is None or str(host).startswith(_LOOPBACK):
        return host
    if str(host) in _cluster_hosts():
        return "127.0.0.1"
    raise socket.gaierror(socket.EAI_NONAME, f"network guard: name lookup of {host!r} blocked")


def _guarded_getaddrinfo(host, *args, **kwargs):
    return _getaddrinfo(_lookup(host), *args, **kwargs)


def _guarded_gethostbyname(host):
    return _gethostbyname(_lookup(host))


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
socket.gethostbyname = _guarded_gethostbyname
