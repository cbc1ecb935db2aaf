"""An S3-compatible server (moto) for the screenshot tests.

Prints `listening <port>` once it accepts connections, then serves until its standard
input closes: the test binary holds the other end, so the server dies with the tests
even when they are killed.
"""

import sys

from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
_, port = server.get_host_and_port()
print(f"listening {port}", flush=True)
sys.stdin.read()
server.stop()
