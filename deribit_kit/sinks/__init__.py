"""Sinks: broker consumers that take the streams somewhere else.

:class:`~deribit_kit.sinks.recorder.Recorder` writes every frame of its channels (and whole
currencies' books) to a recording on disk (:mod:`deribit_kit.recording`), which
:class:`deribit_kit.upstream.replay.Replay` plays back through a broker.
"""

from .recorder import Recorder

__all__ = ["Recorder"]
