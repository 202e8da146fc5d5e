"""An HTTP API (aiohttp) for SMS gateways and applications, with Prometheus metrics (prometheus_client).
Needs the `http` extra: `pip install 'spamguard[http]'`."""
