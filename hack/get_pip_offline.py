"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads from a host
this network cannot reach: it bootstraps pip from the interpreter's bundled wheel
(ensurepip), then installs the pip version ansible-test asked for from the package index."""

import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
ARGS = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
# ansible-test runs this with a trimmed environment; keep the system CA bundle.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
if os.path.exists(CA_BUNDLE):
    ARGS = ["--cert", CA_BUNDLE] + ARGS
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + ARGS)
