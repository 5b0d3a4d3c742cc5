"""Pforte's broker: the control plane (directory login, TOTP, placement, tickets, portal)."""
