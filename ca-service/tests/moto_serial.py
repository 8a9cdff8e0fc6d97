"""moto's AWS stand-in, running one request at a time.

moto_server answers on many threads, and its DynamoDB TransactWriteItems checks the
conditions and writes the items without a lock: two concurrent transactions can both pass
a condition that only one of them should (two certificates for one token). Real DynamoDB
runs transactions serializably. Running one request at a time gives the tests that
guarantee, so the conformance suite's concurrency cases test Lanyard, not moto's races.

Connections are served on threads of their own, and only the requests are serialized (a
lock around the application, the whole answer made inside it). A server that handled one
connection at a time would wait for the next request on an idle keep-alive connection
while the client waits for an answer on another one: both sides stuck for good, which is
what a test with two clients in flight (racing rotations) ran into.

Usage: python3 moto_serial.py PORT
"""

import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

if __name__ == "__main__":
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, one_at_a_time, threaded=True)
