"""Prometheus and Alertmanager behind basic auth, natively, with the web configurations docker
compose uses (the committed prometheus/web.yml and alertmanager/web.yml plus a generated user):
every path refuses a request without the password (401), the lifecycle endpoints stay off,
Prometheus authenticates to Alertmanager and to itself with password files, and amtool works
through an HTTP client configuration (as the compose healthcheck does). docs/security.md.
"""

import shutil
import subprocess

import pytest
import requests

from mlpulse.prometheus import native as pc
from native_stack.processes import Stack, free_port, wait_http
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.integration
PROMETHEUS, PROMTOOL, AMTOOL = shutil.which("prometheus"), shutil.which("promtool"), shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER and PROMTOOL and AMTOOL),
                    reason="Debian's prometheus / prometheus-alertmanager not installed (make system-deps)")
def test_prometheus_and_alertmanager_refuse_requests_without_the_password(tmp_path):
    prom_port, am_port = free_port(), free_port()
    prom, am = f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}"
    prom_web = pc.write_web_auth(tmp_path / "prom-auth", "prometheus", root=ROOT)
    am_web = pc.write_web_auth(tmp_path / "am-auth", "alertmanager", root=ROOT)
    for web in (prom_web, am_web):
        r = subprocess.run([PROMTOOL, "check", "web-config", str(web.web_config)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "basic_auth_users" in web.web_config.read_text() and web.password not in web.web_config.read_text()

    am_config = pc.write_native_alertmanager_config(tmp_path / "am", "http://127.0.0.1:1/alerts",
                                                    config_path=ROOT / pc.ALERTMANAGER_FILE)
    prom_config = pc.write_native_config(
        tmp_path / "prom", {"prometheus": f"127.0.0.1:{prom_port}", "alertmanager": f"127.0.0.1:{am_port}"},
        alertmanagers=[f"127.0.0.1:{am_port}"], scrape_interval="1s", evaluation_interval="1s",
        password_files={"prometheus": prom_web.password_file, "alertmanager": am_web.password_file},
        config_path=ROOT / pc.CONFIG_FILE)
    with Stack() as stack:
        am_proc = stack.start("alertmanager", [ALERTMANAGER, f"--config.file={am_config}",
                                                f"--storage.path={tmp_path / 'am-data'}",
                                                f"--web.listen-address=127.0.0.1:{am_port}",
                                                "--cluster.listen-address=", am_web.flag], tmp_path / "am.log")
        prom_proc = stack.start("prometheus", [PROMETHEUS, f"--config.file={prom_config}",
                                               f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                               f"--web.listen-address=127.0.0.1:{prom_port}", prom_web.flag,
                                               # the Watchdog may fire before Alertmanager is discovered
                                               "--rules.alert.resend-delay=1s"],
                                tmp_path / "prometheus.log")
        wait_http(f"{am}/-/ready", 30, am_proc.popen, auth=am_web.auth)
        wait_http(f"{prom}/-/ready", 30, prom_proc.popen, auth=prom_web.auth)

        # Without the password (or with the other server's): 401 everywhere, health included.
        for base, paths in ((prom, ["/-/healthy", "/-/ready", "/metrics", "/api/v1/query?query=up",
                                    "/api/v1/status/config", "/graph"]),
                            (am, ["/-/healthy", "/-/ready", "/metrics", "/api/v2/status", "/api/v2/silences"])):
            for path in paths:
                assert requests.get(base + path, timeout=5).status_code == 401, base + path
        assert requests.get(f"{prom}/-/healthy", auth=am_web.auth, timeout=5).status_code == 401
        assert requests.get(f"{prom}/-/healthy", auth=(pc.WEB_USER, "wrong"), timeout=5).status_code == 401
        # No silence without the password: the one thing anyone on the network could do before.
        silence = {"matchers": [{"name": "alertname", "value": ".+", "isRegex": True}], "createdBy": "t",
                   "comment": "t", "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2100-01-01T00:00:00Z"}
        assert requests.post(f"{am}/api/v2/silences", json=silence, timeout=5).status_code == 401
        assert requests.post(f"{am}/-/reload", timeout=5).status_code == 401
        # The lifecycle endpoints are off even with the password (reload: SIGHUP or a restart).
        for path in ("/-/quit", "/-/reload"):
            assert requests.post(prom + path, auth=prom_web.auth, timeout=5).status_code == 403, path
        assert prom_proc.popen.poll() is None

        # With the password: Prometheus scrapes itself and Alertmanager, and sends to it.
        def up():
            r = requests.get(f"{prom}/api/v1/query", params={"query": "up"}, auth=prom_web.auth, timeout=5).json()
            return {s["metric"]["job"]: s["value"][1] for s in r["data"]["result"]}

        wait_for(lambda: up() == {"prometheus": "1", "alertmanager": "1"}, 30, "authenticated scrapes")
        active = requests.get(f"{prom}/api/v1/alertmanagers", auth=prom_web.auth, timeout=5).json()
        assert [a["url"] for a in active["data"]["activeAlertmanagers"]] == [f"{am}/api/v2/alerts"]
        wait_for(lambda: requests.get(f"{am}/api/v2/alerts", auth=am_web.auth, timeout=5).json(), 30,
                 "the Watchdog heartbeat delivered to the authenticated Alertmanager")

        # amtool through an HTTP client configuration (the compose healthcheck's way); without it, refused.
        client = am_web.http_config(tmp_path / "amtool")
        args = [AMTOOL, f"--alertmanager.url={am}", "config", "show"]
        assert subprocess.run(args[:1] + [f"--http.config.file={client}"] + args[1:],
                              capture_output=True, timeout=30).returncode == 0
        assert subprocess.run(args, capture_output=True, timeout=30).returncode != 0
