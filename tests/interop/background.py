"""A function run in a background thread whose exception join() raises in the caller: how
the stream-processor tests keep feeding input while they kill things."""

import threading


class Background(threading.Thread):
    def __init__(self, fn, *args, **kwargs):
        super().__init__(daemon=True)
        self.fn, self.args, self.kwargs, self.error = fn, args, kwargs, None
        self.start()

    def run(self):
        try:
            self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # handed to join()
            self.error = e

    def join(self, timeout=None):
        super().join(timeout)
        if self.error is not None:
            raise self.error
