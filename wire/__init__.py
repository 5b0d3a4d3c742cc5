"""What crosses Pforte's process boundaries, in one small package below broker, gateway and
clients: the ticket codec, the close codes and end reasons, the resume control messages, the
gateway's reports to the broker, the RFB handshake, the config reader, the shared errors and what
every HTTP port of Pforte shares.

It imports nothing from the project; broker and gateway import each other never, and share only
this package (``tests/test_architecture.py`` enforces both).
"""
