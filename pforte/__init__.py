"""The ``pforte`` command: one entry point for the broker, the gateway, the admin and client
tools and the demo. It sits above every other package and is the only place that knows them all."""
