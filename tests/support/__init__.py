"""What the tests (and the benchmarks under load_tests/) share, one module per concern.

- ``paths``: the repository root.
- ``ports``: free TCP ports, reserved for the session.
- ``processes``: starting real processes (our services by name, workers, anything else),
  waiting until they answer, reading their logs, stopping them.
- ``polling``: waiting for a condition, synchronously or in the event loop.
- ``infra``: PostgreSQL, RabbitMQ and environment helpers for the session's infrastructure, and
  throwaway PostgreSQL and Redis servers (``PrivatePostgres``, ``PrivateRedis``) a test may stop.
- ``storage``: objects in the session's store.
- ``signing``: the session's URL signer and signed URLs.
- ``metrics``: reading a Prometheus text exposition.
- ``media``: clips, HLS ladders and large files made for tests.
- ``hls``: parsing and strictly checking HLS playlists and ladders.
- ``proxies``: haproxy and nginx in front of our services.
- ``browser``: headless Chromium.
- ``prometheus``: a real Prometheus server and the dashboards' queries.
- ``suite``: every service of the platform at once, on free ports.
- ``vsp_up``: ``vsp up`` itself as a process, its output and its children.
- one module per service's tests: ``balancer``, ``edge``, ``origin``, ``redirector``,
  ``transcode``, ``upload``; and ``deploy`` for the deployment files.
"""
