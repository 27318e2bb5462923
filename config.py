# pyinfra's settings for the runs started from this directory (pyinfra reads ./config.py first).
import logging

# A host whose SSH port never answers makes paramiko print a traceback of its own; the deploy reports
# that host in one line instead ("not deployed: no SSH connection").
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

# Seconds to wait for a host's SSH connection.
CONNECT_TIMEOUT = 10
