"""Test and demo tooling: real servers (slapd, Samba AD, sshd, dnsmasq, Xvnc, Chromium helpers) on
loopback, and the demo. Runs from a checkout; the wheel does not ship it."""
