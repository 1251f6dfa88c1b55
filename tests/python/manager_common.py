"""What the scripts in this directory share: their command-line arguments,
and a user's class and Enum that the interop script stores.

ADDRESS is `unix:PATH`, `tcp:HOST:PORT` (what `multiproc manager serve`
prints after "serving on"), a bare path, or HOST:PORT. AUTHKEY_HEX is the
key in hexadecimal.
"""

import dataclasses
import enum


def address(text):
    """The manager address `text` names, as multiprocessing wants it."""
    if text.startswith("unix:"):
        return text[len("unix:"):]
    if text.startswith("tcp:"):
        text = text[len("tcp:"):]
    elif "/" in text or ":" not in text:
        return text
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port))


def authkey(hex_text):
    """The authkey written in hexadecimal."""
    return bytes.fromhex(hex_text)


def show(addr):
    """`addr` written as `address` reads it."""
    if isinstance(addr, tuple):
        return "tcp:%s:%d" % addr
    return "unix:" + addr


@dataclasses.dataclass
class Point:
    """A user's class: a manager stores its instances without knowing it
    (CPython's server imports this module to unpickle one; ours never
    imports anything and keeps it as an inert value)."""

    x: int
    y: float
    label: str = ""
    tags: tuple = ()


class Color(enum.Enum):
    """A user's Enum: its members pickle as a call of the class, which
    CPython's server makes and ours refuses (README)."""

    RED = 1
