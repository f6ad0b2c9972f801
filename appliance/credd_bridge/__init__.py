"""The credential bridge: takes a login's Kerberos ticket cache from the hub over a
local Unix socket, checks it, stores it in the HTCondor credd and keeps it renewed.

Modules:

* :mod:`.protocol` - the newline-delimited JSON protocol (docs/credentials.md)
* :mod:`.bridge`   - checks, per-user state, renewal scheduling (no I/O loop)
* :mod:`.credstore` - where checked credentials go (``CredStore``; HTCondor credd, memory)
* :mod:`.server`   - the asyncio Unix-socket server with SO_PEERCRED checks
* :mod:`.client`   - the client the hub uses
* ``python -m appliance.credd_bridge`` - the daemon

This package's import has no side effects and needs only the standard library.
"""

DEFAULT_SOCKET = "/run/appliance/bridge.sock"
DEFAULT_CCACHE_DIR = "/run/appliance/ccache"
DEFAULT_SUBMIT_DIR = "/run/appliance/ccache-submit"
