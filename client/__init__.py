"""The client side: what runs on a user's or an admin's machine, never on a broker — the boot
agent of thin clients, the local tunnel for native viewers (``pforte connect``), the resumable
gateway stream, the admin command (``pforte admin``) and the one broker API client they share."""
