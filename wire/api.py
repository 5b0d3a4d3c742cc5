"""Names in the broker's HTTP API that the broker and its clients (``client``, the portal's pages
in their own words) must spell alike."""

DEVICE_HEADER = "X-Pforte-Device"                   # a thin client's device credential
RECONNECT_PASS_HEADER = "X-Pforte-Reconnect-Pass"   # see broker.reconnect_pass
