# pyinfra's settings for the runs started from this directory (pyinfra reads ./config.py first).
import logging

from tailnix.connect_errors import record_connect_errors
from tailnix.interrupt import exit_nonzero_on_interrupt

# pyinfra exits 0 on Ctrl-C; a deploy that was interrupted exits 130 instead (from here on, so also
# while pyinfra loads the inventory and connects).
exit_nonzero_on_interrupt()

# A host whose SSH port never answers makes paramiko print a traceback of its own; the deploy reports
# that host in one line instead ("not deployed: no SSH connection").
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

# Why a host could not be reached (connection refused, timed out, authentication failed, host key
# mismatch), as pyinfra found it, for that host's line in the deploy's summary.
record_connect_errors()

# Seconds to wait for a host's SSH connection.
CONNECT_TIMEOUT = 10
