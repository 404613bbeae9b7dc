"""The gunicorn server hooks that ``mlpulse serve`` installs (``mlpulse.gunicorn``)."""

import gc
import os
import subprocess
import sys

from mlpulse.gunicorn import post_worker_init
from mlpulse.serving import gunicorn_conf_path


def test_post_worker_init_freezes_what_is_loaded():
    gc.unfreeze()
    before = len(gc.get_objects())
    try:
        post_worker_init(None)
        assert gc.get_freeze_count() >= before // 2  # the loaded objects left the collected generations
        assert len(gc.get_objects()) < before // 2
    finally:
        gc.unfreeze()


def test_served_config_installs_the_hook(tmp_path):
    # In a child: the config file sets environment defaults and creates directories when read.
    code = (f"import runpy, mlpulse.gunicorn as h; ns = runpy.run_path({gunicorn_conf_path()!r}); "
            "print(ns['post_worker_init'] is h.post_worker_init, ns['child_exit'] is h.child_exit)")
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "mp"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["True", "True"]
