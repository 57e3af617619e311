"""The serving node: the HTTP API, metering, the verifier worker and its judges, and the process that holds them."""
