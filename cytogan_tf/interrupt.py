"""Ctrl-C during training stops at the next step boundary instead of wherever it lands.

Python raises KeyboardInterrupt at whatever bytecode the main thread runs next: inside a
checkpoint write, a TensorBoard flush or TensorFlow's own Python code, and the steps
trained since the last checkpoint are lost. So the first Ctrl-C only asks for a stop,
which the training loop honours between steps, where it saves the step it reached. A
second Ctrl-C raises KeyboardInterrupt at once, as usual. A process whose SIGINT is
ignored (a shell's background job, `nohup`) is left as it is: it ignores Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def stop_on_first_sigint(request_stop: Callable[[], None]) -> Iterator[bool]:
    """Within the block, the first SIGINT calls `request_stop` instead of raising.

    Yields whether the handler is installed: only the main thread can install one, and a
    SIGINT that the caller ignores or handles itself (a background job, an embedding
    application) is left alone.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield False
        return

    def on_sigint(signum, frame):
        # The second Ctrl-C is the ordinary one: whoever presses twice wants out now.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request_stop()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield True
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
