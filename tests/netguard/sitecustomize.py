"""Loaded by every subprocess the tests start (through PYTHONPATH): any connection or name
lookup outside loopback raises, so a test that reaches the network fails."""

import socket

_LOOPBACK = ("127.", "::1", "localhost")
_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect,
    socket.socket.connect_ex,
    socket.getaddrinfo,
)


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


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host is not None and not str(host).startswith(_LOOPBACK):
        raise OSError(f"network guard: name lookup of {host!r} blocked in tests")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
