"""Node side, inside a notebook job, as the user: Dask from the notebook (docs/user-guide.md).

Installed into the single-user environment as the package ``appliance_notebook`` (the mini site
copies this directory into the ``/opt/jupyter`` venv; every import here is relative, so the
package works under either name). Nothing here runs in the hub.

* :mod:`.jobinfo`     which batch job this notebook is (HTCondor job ad, Slurm environment);
* :mod:`.tls`         a private TLS identity for the notebook's Dask clusters, and the ``DASK_*``
                      variables that make every cluster of the session use it;
* :mod:`.extension`   a Jupyter server extension that sets both up when the server starts, so
                      kernels and terminals inherit them;
* :mod:`.dashboard_guard`  a Dask scheduler preload: the dashboard answers only processes of the
                      notebook's own user on the same node (jupyter-server-proxy), never others.
"""


def _jupyter_server_extension_points():
    return [{"module": __name__ + ".extension"}]
