"""Turning answers into decisions: per choice (:mod:`proxy.judging.decision`), per reply
(:mod:`proxy.judging.replies`, :mod:`proxy.judging.responses`), per stream prefix
(:mod:`proxy.judging.stream_gate`), and large replies in other processes
(:mod:`proxy.judging.offload`)."""
