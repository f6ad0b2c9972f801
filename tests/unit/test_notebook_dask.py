"""Dask from the notebook, the pure and local parts: which job a notebook is, the TLS identity and
the session's DASK_* variables, the dashboard guard's peer lookup (real sockets, real
/proc/net/tcp, a real tornado server), the worker reaper's choice of orphans."""

from __future__ import annotations

import datetime
import json
import os
import socket
import stat
import struct
import threading

import pytest

from appliance import worker_reaper
from appliance.notebook import dashboard_guard, extension, job_lease, jobinfo, tls

AD = '''ClusterId = 12
GlobalJobId = "lane.mini.test#12.0#1764600000"
Owner = "alice"
'''


# ---------------------------------------------------------------------------------- jobinfo
def test_htcondor_job_from_the_job_ad():
    job = jobinfo.notebook_job({"_CONDOR_JOB_AD": "/x/.job.ad", "SLURM_JOB_ID": "5"},
                               read=lambda p: AD)
    assert job == jobinfo.NotebookJob("htcondor", "lane.mini.test#12.0#1764600000")
    assert job.slurm_worker_name == ""


def test_slurm_job_and_its_worker_name():
    job = jobinfo.notebook_job({"SLURM_JOB_ID": "123"})
    assert job == jobinfo.NotebookJob("slurm", "123") and job.slurm_worker_name == "dask-nb123"


@pytest.mark.parametrize("env,ad", [
    ({}, None),
    ({"SLURM_JOB_ID": "12; rm -rf"}, None),
    ({"_CONDOR_JOB_AD": "/x"}, 'GlobalJobId = "no spaces allowed here"\n'),
    ({"_CONDOR_JOB_AD": "/x"}, "ClusterId = 3\n"),
])
def test_no_job_or_garbage_gives_none(env, ad):
    assert jobinfo.notebook_job(env, read=lambda p: ad) is None


def test_unreadable_job_ad_falls_back_to_slurm():
    def read(path):
        raise OSError("gone")
    assert jobinfo.notebook_job({"_CONDOR_JOB_AD": "/x", "SLURM_JOB_ID": "7"}, read=read).backend == "slurm"


# -------------------------------------------------------------------------------------- TLS
def test_identity_files_are_private_and_a_valid_pair(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    d = tls.make_identity(str(tmp_path / "a" / "dask-tls"), now=now, days=8)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in (tls.CERT_NAME, tls.KEY_NAME):
        st = os.stat(os.path.join(d, name))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    cert = x509.load_pem_x509_certificate(open(os.path.join(d, tls.CERT_NAME), "rb").read())
    key = serialization.load_pem_private_key(open(os.path.join(d, tls.KEY_NAME), "rb").read(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.not_valid_after_utc == now + datetime.timedelta(days=8)
    first = open(os.path.join(d, tls.KEY_NAME), "rb").read()
    tls.make_identity(d)  # a new notebook start: a new key
    assert open(os.path.join(d, tls.KEY_NAME), "rb").read() != first
    assert set(os.listdir(d)) == {"cert.pem", "key.pem"}  # no temporary files left


def test_identity_dir_refuses_a_symlink(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "dask-tls").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError):
        tls.make_identity(str(tmp_path / "dask-tls"))


def test_identity_dir_loses_group_bits(tmp_path):
    d = tmp_path / "dask-tls"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    tls.make_identity(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_dask_env_names_every_role_and_fails_closed_without_identity():
    env = tls.dask_env("/h/a/.cache/appliance/dask-tls")
    assert set(env) == set(tls.env_names())
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == "/h/a/.cache/appliance/dask-tls/key.pem"
    assert tls.dask_env(None) == {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}


def test_site_config_exports_exactly_the_tls_variables():
    """The Slurm --export list in the shipped Dask config names every variable dask_env sets."""
    import yaml

    here = os.path.dirname(__file__)
    conf = yaml.safe_load(open(os.path.join(here, "..", "..", "minisite", "dask", "appliance.yaml")))
    export = [d for d in conf["jobqueue"]["slurm"]["job-extra-directives"] if d.startswith("--export=")]
    names = set(export[0].split("=", 1)[1].split(","))
    assert set(tls.env_names()) <= names
    assert not any(n.startswith("JUPYTERHUB") or n.startswith("KRB5") for n in names)
    getenv = conf["jobqueue"]["htcondor"]["job-extra-directives"]["getenv"]
    assert "DASK_DISTRIBUTED__COMM__*" in getenv and "JUPYTERHUB" not in getenv


# -------------------------------------------------------------------------------- extension
def test_session_env_for_a_slurm_notebook():
    env = extension.session_env({"SLURM_JOB_ID": "77", "JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"},
                                "/h/alice/.cache/appliance/dask-tls", host="node1.mini.test")
    assert env["APPLIANCE_NOTEBOOK_JOB"] == "77"
    assert env["DASK_JOBQUEUE__SLURM__NAME"] == "dask-nb77"
    assert env["APPLIANCE_NOTEBOOK_HOST"] == "node1.mini.test"
    assert env["DASK_DISTRIBUTED__DASHBOARD__LINK"] == "/user/alice/proxy/{port}/status"
    assert env["DASK_DISTRIBUTED__DASHBOARD__LINK"].format(port=4321, **os.environ) == \
        "/user/alice/proxy/4321/status"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"].endswith("/cert.pem")
    assert env["DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS__PROTOCOL"] == "tls"
    assert env["DASK_JOBQUEUE__HTCONDOR__SCHEDULER_OPTIONS__PROTOCOL"] == "tls"


def test_session_env_for_an_htcondor_notebook_and_outside_a_job(tmp_path):
    (tmp_path / ".job.ad").write_text(AD)
    env = extension.session_env({"_CONDOR_JOB_AD": str(tmp_path / ".job.ad"),
                                 "JUPYTERHUB_SERVICE_PREFIX": "/user/{x}"},
                                None, host="exec1.mini.test")
    assert env["APPLIANCE_NOTEBOOK_JOB"] == "lane.mini.test#12.0#1764600000"
    assert "DASK_JOBQUEUE__SLURM__NAME" not in env
    assert env["DASK_DISTRIBUTED__DASHBOARD__LINK"].format(port=1) == "/user/{x}/proxy/1/status"
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" not in env  # no identity: encryption still required
    plain = extension.session_env({}, None, host="h")
    assert "APPLIANCE_NOTEBOOK_JOB" not in plain and plain["DASK_DISTRIBUTED__DASHBOARD__LINK"] == "/proxy/{port}/status"


def test_prepare_sets_the_environment(tmp_path):
    environ = {"SLURM_JOB_ID": "9", "APPLIANCE_DASK_TLS_DIR": str(tmp_path / "t")}
    added = extension.prepare(environ)
    assert environ["DASK_JOBQUEUE__SLURM__NAME"] == "dask-nb9"
    assert os.path.exists(added["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY"])


# -------------------------------------------------------------------------- dashboard guard
def _hex4(ip: str, port: int) -> str:
    (word,) = struct.unpack("=I", socket.inet_aton(ip))
    return f"{word:08X}:{port:04X}"


def test_proc_net_tcp_address_parsing():
    assert dashboard_guard._addr("0100007F:1F90") == ("127.0.0.1", 8080)
    assert dashboard_guard._addr(_hex4("172.30.4.41", 40000)) == ("172.30.4.41", 40000)
    # ::ffff:127.0.0.1 in tcp6, as the kernel prints it (4 words, host order)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1")
    words = "".join(f"{w:08X}" for w in struct.unpack("=4I", mapped))
    assert dashboard_guard._addr(words + ":0050") == ("127.0.0.1", 80)


def test_peer_uid_from_a_table(tmp_path):
    t = tmp_path / "tcp"
    t.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        f"   0: {_hex4('127.0.0.1', 41000)} {_hex4('0.0.0.0', 0)} 0A 0:0 00:00000000 00000000  2001 0 1\n"
        f"   1: {_hex4('127.0.0.1', 41000)} {_hex4('127.0.0.1', 55555)} 01 0:0 00:00000000 00000000  2001 0 2\n"
        f"   2: {_hex4('127.0.0.1', 55555)} {_hex4('127.0.0.1', 41000)} 01 0:0 00:00000000 00000000  2002 0 3\n"
        "   3: garbage\n")
    # the peer's own entry (local = peer) decides, not the server's side of the connection
    assert dashboard_guard.peer_uid(("127.0.0.1", 55555), ("127.0.0.1", 41000), [str(t)]) == 2002
    assert dashboard_guard.peer_uid(("127.0.0.1", 55556), ("127.0.0.1", 41000), [str(t)]) is None
    assert dashboard_guard.peer_uid(("127.0.0.1", 55555), ("127.0.0.1", 41000), [str(tmp_path / "none")]) is None


def test_peer_uid_of_a_real_loopback_connection():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        assert dashboard_guard.peer_uid(conn.getpeername(), conn.getsockname()) == os.getuid()
    finally:
        for s in (cli, conn, srv):
            s.close()


def _serve(uid):
    """A tornado app behind the guard, in a thread; returns (port, stop)."""
    import asyncio

    from tornado import httpserver, web

    ready, box = threading.Event(), {}

    class Hello(web.RequestHandler):
        def get(self):
            self.write("dashboard")

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application([(r"/status", Hello)])
        server = httpserver.HTTPServer(app)
        server.listen(0, "127.0.0.1")
        dashboard_guard.install(server, app, uid=uid)
        box["port"] = next(iter(server._sockets.values())).getsockname()[1]
        box["loop"] = loop
        ready.set()
        loop.run_forever()
        server.stop()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait(5)
    return box["port"], lambda: box["loop"].call_soon_threadsafe(box["loop"].stop)


def _get(port):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError) as e:
        return type(e).__name__


def test_guard_serves_its_own_uid():
    port, stop = _serve(os.getuid())
    try:
        assert _get(port) == 200
    finally:
        stop()


def test_guard_refuses_another_uid():
    port, stop = _serve(os.getuid() + 4242)
    try:
        assert _get(port) != 200
    finally:
        stop()


def test_guard_checks_requests_on_connections_from_before_it(monkeypatch):
    """A keep-alive connection accepted before the guard existed gets 403 on its next request."""
    from tornado import httputil, web

    app = web.Application([(r"/status", web.RequestHandler)])

    class FakeServer:
        def handle_stream(self, stream, address):
            return "served"

    class Stream:
        class socket:
            @staticmethod
            def getpeername():
                return ("10.0.0.9", 1234)  # not on this host: no table entry

            @staticmethod
            def getsockname():
                return ("127.0.0.1", 80)

    dashboard_guard.install(FakeServer(), app, uid=os.getuid())
    conn = type("C", (), {"stream": Stream()})()
    req = httputil.HTTPServerRequest(start_line=httputil.RequestStartLine("GET", "/status", "HTTP/1.1"),
                                     headers=httputil.HTTPHeaders({"Host": "localhost"}), connection=conn)
    delegate = app.find_handler(req)
    assert delegate.handler_class is web.ErrorHandler and delegate.handler_kwargs == {"status_code": 403}


# ------------------------------------------------------------------------------------ reaper
def test_orphans_are_tagged_jobs_whose_notebook_is_not_running_for_the_same_owner():
    T = worker_reaper.TaggedJob
    workers = [T("11", "alice", "5"), T("12", "alice", "6"),
               T("13", "bob", "5")]  # bob tied his job to alice's notebook: not his
    dead = worker_reaper.orphans(workers, {("alice", "5")})
    assert [w.job_id for w in dead] == ["12", "13"]


def test_slurm_snapshot_reads_one_squeue_answer():
    data = {"jobs": [
        {"job_id": 10, "name": "jupyterhub", "user_name": "alice", "job_state": ["RUNNING"]},
        {"job_id": 11, "name": "dask-nb10", "user_name": "alice", "job_state": ["RUNNING"]},
        {"job_id": 12, "name": "dask-nb10", "user_name": "alice", "job_state": ["PENDING"]},
        {"job_id": 13, "name": "dask-nb99", "user_name": "alice", "job_state": "PENDING"},
        {"job_id": 14, "name": "dask-nb10", "user_name": "alice", "job_state": ["COMPLETING"]},
        {"job_id": 15, "name": "dask-worker", "user_name": "alice", "job_state": ["PENDING"]},
        {"job_id": 16, "name": "dask-nb10", "user_name": "bob", "job_state": ["PENDING"]},
    ]}
    workers, running = worker_reaper.slurm_snapshot(data)
    assert [w.job_id for w in workers] == ["11", "12", "13", "16"]
    assert ("alice", "10") in running
    assert [w.job_id for w in worker_reaper.orphans(workers, running)] == ["13", "16"]


def test_slurm_side_cancels_only_orphans(tmp_path):
    squeue = tmp_path / "squeue"
    scancel = tmp_path / "scancel"
    log = tmp_path / "cancelled"
    squeue.write_text("#!/bin/sh\ncat <<'EOF'\n" + json.dumps({"jobs": [
        {"job_id": 20, "name": "jupyterhub", "user_name": "alice", "job_state": ["COMPLETED"]},
        {"job_id": 21, "name": "dask-nb20", "user_name": "alice", "job_state": ["PENDING"]},
        {"job_id": 30, "name": "jupyterhub", "user_name": "bob", "job_state": ["RUNNING"]},
        {"job_id": 31, "name": "dask-nb30", "user_name": "bob", "job_state": ["RUNNING"]},
    ]}) + "\nEOF\n")
    scancel.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    for p in (squeue, scancel):
        p.chmod(0o755)
    dead = worker_reaper.SlurmSide(str(squeue), str(scancel)).pass_once()
    assert [w.job_id for w in dead] == ["21"] and log.read_text().split() == ["21"]


def test_reaper_options():
    args = worker_reaper.build_parser().parse_args(["--interval", "5", "--slurm", "yes"])
    assert args.interval == 5 and args.slurm == "yes"


# --------------------------------------------------------------------- OpenSSL error queue
def test_openssl_workaround_clears_a_stale_error_before_the_next_ssl_call(monkeypatch, tmp_path):
    """With OpenSSL >= 3.4 every SSLSocket call first drops entries left on the thread's error
    queue (the nodes' CPython leaves one after a failed write; the next read then fails)."""
    import ssl

    from appliance.notebook import openssl_errors

    lib = openssl_errors._libcrypto()
    if lib is None:
        pytest.skip("no libcrypto to load")
    for name in openssl_errors.METHODS:  # restore the real methods afterwards
        if hasattr(ssl.SSLSocket, name):
            monkeypatch.setattr(ssl.SSLSocket, name, getattr(ssl.SSLSocket, name))
    monkeypatch.setattr(openssl_errors, "PATCHED", False)
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_INFO", (3, 5, 0, 0, 0))
    assert openssl_errors.install()
    # a real TLS pair in this thread
    import threading

    d = tls.make_identity(str(tmp_path / "tls"))
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(os.path.join(d, tls.CERT_NAME), os.path.join(d, tls.KEY_NAME))
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    raw = socket.create_connection(ls.getsockname())
    conn, _ = ls.accept()
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("s", sctx.wrap_socket(conn, server_side=True)))
    t.start()
    c = cctx.wrap_socket(raw)
    t.join()
    try:
        # push an error the way a failed syscall does (ERR_raise(ERR_LIB_SYS, EPIPE))
        lib.ERR_new()
        lib.ERR_set_debug(b"test", 1, b"test")
        lib.ERR_set_error(2, 32, None)  # ERR_LIB_SYS = 2, reason EPIPE
        assert lib.ERR_peek_error()
        before = openssl_errors.cleared
        c.sendall(b"ping")
        assert box["s"].recv(4) == b"ping"
        assert openssl_errors.cleared == before + 1 and not lib.ERR_peek_error()
    finally:
        c.close()
        box["s"].close()
        ls.close()


# --------------------------------------------------------------------------- HTCondor lease
def test_lease_renewal_command():
    argv = job_lease.qedit_argv("exec1.mini.test:123:1764600000", now=1764600100.7, lease=40)
    assert argv[:2] == ["condor_qedit", "-constraint"]
    assert 'JbaDaskKernel == "exec1.mini.test:123:1764600000"' in argv[2]
    assert "JbaDaskWorker =?= true" in argv[2] and "JobStatus =!= 4" in argv[2]
    assert argv[3:] == ["JbaLeaseExpiry", str(1764600100 + 40)]
    with pytest.raises(ValueError):
        job_lease.qedit_argv('x" || true || "', now=0)


def test_lease_no_job_yet_is_not_a_failure():
    assert job_lease.no_job_matched(
        'Failed to set attribute "JbaLeaseExpiry" by constraint: ( (JbaDaskKernel == "x") )\n'
        "Queue transaction failed.  No attributes were set.\n")
    assert not job_lease.no_job_matched("ERROR: Failed to connect to queue manager schedd.mini.test\n"
                                        "AUTHENTICATE:1003:Failed to authenticate with any method\n")


def test_site_config_lease_matches_the_renewer():
    import yaml

    here = os.path.dirname(__file__)
    conf = yaml.safe_load(open(os.path.join(here, "..", "..", "minisite", "dask", "appliance.yaml")))
    extra = conf["jobqueue"]["htcondor"]["job-extra-directives"]
    assert extra["MY.JbaLeaseExpiry"] == f"QDate + {job_lease.LEASE}"
    assert "time() > JbaLeaseExpiry" in extra["periodic_remove"]
    assert "APPLIANCE_DASK_KERNEL" in extra["MY.JbaDaskKernel"]
    assert "appliance_notebook.job_lease" in conf["distributed"]["scheduler"]["preload"]
    assert job_lease.RENEW * 3 < job_lease.LEASE  # three renewals may fail in a row
