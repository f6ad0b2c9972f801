#!/usr/bin/env python3
"""Response time of /hub/metrics (what Prometheus scrapes) with 0 and with 100 extra users.

Against the running mini site (source scripts/instance.sh N first for a copy). Bounded (a few
hundred requests, < 2 min), and it removes what it made:

1. A temporary admin token: no demo account is an admin, so the script (as root in the
   appliance container, through JupyterHub's own ORM on the hub database) makes a user
   ``opsbench`` with a role ``ops-bench`` (scopes ``admin:users``) and a 1-hour token for it;
2. times N sequential GET /hub/metrics through the front door (HTTPS, nginx, CHP) with the
   Prometheus service token (read:metrics only);
3. creates 100 users through the REST API (POST /hub/api/users), times N requests again;
4. deletes the 100 users through the API, then the role, user and token.

Prints p50/p95/max in ms and the size of the answer.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.conftest import SITE_URL, ca_bundle, site_exec  # noqa: E402

MAKE_ADMIN = r"""
import sys
from jupyterhub import orm
from appliance.hub.database import db_url
db = orm.new_session_factory(db_url())()
role = orm.Role.find(db, "ops-bench") or orm.Role(name="ops-bench", scopes=["admin:users"])
db.add(role)
user = orm.User.find(db, "opsbench") or orm.User(name="opsbench")
db.add(user)
if role not in user.roles:
    user.roles.append(role)
db.commit()
print(user.new_api_token(note="metrics_bench", expires_in=3600, scopes=["admin:users"]))
"""
DROP_ADMIN = r"""
from jupyterhub import orm
from appliance.hub.database import db_url
db = orm.new_session_factory(db_url())()
for obj in (orm.User.find(db, "opsbench"), orm.Role.find(db, "ops-bench")):
    if obj is not None:
        db.delete(obj)
db.commit()
"""


def py(code: str) -> str:
    return site_exec("appliance", "/opt/jupyterhub/bin/python", "-c", code, timeout=120).stdout.strip()


def time_metrics(s: requests.Session, token: str, n: int) -> dict:
    times, size = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = s.get(f"{SITE_URL}/hub/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        times.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        size = len(r.content)
    times.sort()
    return {"n": n, "p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[int(0.95 * (n - 1))], 1), "max_ms": round(times[-1], 1),
            "bytes": size}


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    s = requests.Session()
    s.trust_env = False
    s.verify = ca_bundle()
    prom = site_exec("appliance", "cat", "/etc/appliance/secrets/metrics/prometheus.token").stdout.strip()
    admin = py(MAKE_ADMIN).splitlines()[-1]
    names = [f"metricsuser{i:03d}" for i in range(100)]
    h = {"Authorization": f"token {admin}"}
    try:
        total0 = len(s.get(f"{SITE_URL}/hub/api/users", headers=h, timeout=60).json())
        base = time_metrics(s, prom, n)
        t0 = time.perf_counter()
        r = s.post(f"{SITE_URL}/hub/api/users", headers=h, json={"usernames": names}, timeout=120)
        r.raise_for_status()
        create_s = time.perf_counter() - t0
        time.sleep(1)
        loaded = time_metrics(s, prom, n)
        total1 = len(s.get(f"{SITE_URL}/hub/api/users", headers=h, timeout=60).json())
    finally:
        for name in names:
            s.delete(f"{SITE_URL}/hub/api/users/{name}", headers=h, timeout=60)
        py(DROP_ADMIN)
    out = {"users_before": total0, "users_after": total1, "create_100_users_s": round(create_s, 2),
           "metrics_before": base, "metrics_with_100_more_users": loaded}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
