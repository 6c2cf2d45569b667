"""One-line checks for the exercises: run the learner's code against real connections, print PASS or FAIL.

>>> from wslab import check
>>> await check.shout(shout)            # doctest: +SKIP
PASS: shout - every message came back in capital letters

A check starts its own servers (named ``check-...``, so the learner's servers keep running), is bounded in
time, stops what it started, never raises, and returns a :class:`Verdict` (truthy when it passed). Code that
blocks the event loop (``time.sleep`` in a handler) cannot be interrupted: the check ends as soon as the loop is
free, and its verdict says how long the loop was blocked. Its own clients never go through a proxy from the
environment; a learner's client that does gets a hint that says so.
The machinery is in :mod:`wslab.check.core`; each chapter's checks are in ``ch00`` ... ``ch07``.
"""

from .ch00 import shout, shout_count
from .ch01 import binary_echo, long_ping, two_fragments
from .ch02 import announcements, names, rooms_endpoint
from .ch03 import first_five, follow, give_up_after, resume
from .ch04 import auth_deadline, polite_client, silent_server, slow_down
from .ch05 import no_disguise, typing, whisper, who
from .ch06 import going_away, max_size_test, percentiles
from .ch07 import follow_stream, ghost_window
from .core import Verdict

__all__ = [  # "Verdict" first, then every check
    "Verdict",
    "announcements",
    "auth_deadline",
    "binary_echo",
    "first_five",
    "follow",
    "follow_stream",
    "ghost_window",
    "give_up_after",
    "going_away",
    "long_ping",
    "max_size_test",
    "names",
    "no_disguise",
    "percentiles",
    "polite_client",
    "resume",
    "rooms_endpoint",
    "shout",
    "shout_count",
    "silent_server",
    "slow_down",
    "two_fragments",
    "typing",
    "whisper",
    "who",
]
