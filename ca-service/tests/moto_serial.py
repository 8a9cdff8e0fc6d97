"""moto's AWS stand-in, serving one request at a time.

moto_server answers on many threads, and its DynamoDB TransactWriteItems checks the
conditions and writes the items without a lock: two concurrent transactions can both pass
a condition that only one of them should (two certificates for one token). Real DynamoDB
runs transactions serializably. Serving one request at a time gives the tests that
guarantee, so the conformance suite's concurrency cases test Lanyard, not moto's races.

Usage: python3 moto_serial.py PORT
"""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

if __name__ == "__main__":
    port = int(sys.argv[1])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, app, threaded=False, processes=1)
