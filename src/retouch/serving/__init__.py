"""Serving: running jobs below every face (HTTP API, web page, command-line server, Ray cluster).

* :mod:`~retouch.serving.values` — what crosses the layer (a validated :class:`JobRequest`, its
  :class:`JobOutcome`, progress);
* :mod:`~retouch.serving.protocols` — :class:`Jobs` and :class:`Catalogue`, the two interfaces a face talks to;
* :mod:`~retouch.serving.requests` — an A1111 API request → a :class:`JobRequest` (every check, before queueing);
* :mod:`~retouch.serving.run` — :func:`run_job`, the same in the local worker and in each Ray replica;
* :mod:`~retouch.serving.models` — :class:`ModelManager`: the checkpoints and VAEs a request may name, loading
  and switching;
* :mod:`~retouch.serving.local` — :class:`LocalBackend`: one worker thread and a queue;
* :mod:`~retouch.serving.previews`, :mod:`~retouch.serving.images`, :mod:`~retouch.serving.errors`.

Nothing here speaks HTTP (that is :mod:`retouch.server`) or draws a page (:mod:`retouch.ui`).
"""
