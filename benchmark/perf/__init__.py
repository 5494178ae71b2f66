"""Performance tools: ``perf merge`` / ``perf eval`` / ``perf grid`` (``merge``, ``evaluation``, ``grid``)
and the real-architecture rehearsal (``rehearse``)."""
