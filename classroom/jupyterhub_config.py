"""JupyterHub for a Mail Lab classroom on one host: `make classroom` (as root).

Each learner is a system user of the group ``mail-lab-learners`` (``classroom/learners add``):
the hub checks their password with PAM and starts their own JupyterLab as that user
(LocalProcessSpawner), in ``~/mail-lab`` with the chapters copied in. A learner's lab sandbox
(``Lab()``, ``labkit up``) is their own: a private folder, their own ports. Learners are not root,
so their labs run in embedded mode; real mode per learner needs a container each (see
classroom/README.md). The hub and its proxy (configurable-http-proxy, from the npm registry)
listen on 127.0.0.1 only.

Environment (all optional):
  MAIL_LAB_HUB_PORT     the port learners open (default 8000), on 127.0.0.1
  MAIL_LAB_HUB_STATE    folder for the hub's database, cookie secret and logs (default classroom/_run)
  MAIL_LAB_HUB_ADMINS   comma-separated user names who may manage the hub from its web page
  MAIL_LAB_HUB_TOKEN    an API token for a service named "classroom" that may start, stop and
                        use every learner's server (the test and bench/classroom.py set it)
  MAIL_LAB_LEARNERS_GROUP  the learners' group (default mail-lab-learners)
  MAIL_LAB_HUB_API_PORT, MAIL_LAB_PROXY_API_PORT  the hub's and the proxy's own API ports
                        (default 8081 and 8001, on 127.0.0.1)
"""
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent            # the venv the hub runs from (make classroom: .venv)
STATE = Path(os.environ.get("MAIL_LAB_HUB_STATE") or HERE / "_run").resolve()
STATE.mkdir(parents=True, exist_ok=True)
os.chmod(STATE, 0o700)
GROUP = os.environ.get("MAIL_LAB_LEARNERS_GROUP", "mail-lab-learners")

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

# -- network: loopback only ----------------------------------------------------------------------
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(os.environ.get("MAIL_LAB_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("MAIL_LAB_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{int(os.environ.get('MAIL_LAB_PROXY_API_PORT', '8001'))}"
c.ConfigurableHTTPProxy.command = [str(ROOT / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")

# -- the hub's own files ---------------------------------------------------------------------------
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True     # stopping the hub stops every learner's server
c.JupyterHub.cleanup_proxy = True

# -- who may log in --------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.allowed_groups = {GROUP}
c.Authenticator.admin_users = {u for u in os.environ.get("MAIL_LAB_HUB_ADMINS", "").split(",") if u}

# -- each learner's JupyterLab, as that learner --------------------------------------------------
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(VENV_BIN / "jupyterhub-singleuser")]
c.Spawner.notebook_dir = "~/mail-lab"
c.Spawner.default_url = "/lab/tree/00_welcome.ipynb"
c.Spawner.environment = {
    "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
    "LABKIT_DIR": "mail-lab-cli",          # `labkit up` in a terminal: ~/mail-lab/mail-lab-cli
}
c.Spawner.start_timeout = 120           # thirty learners at once on two cores take a while
c.Spawner.http_timeout = 120
c.JupyterHub.concurrent_spawn_limit = 100


def copy_chapters(spawner):
    """Before a learner's first start: ~/mail-lab with the chapters, never over their own copies."""
    import pwd

    user = pwd.getpwnam(spawner.user.name)
    work = Path(user.pw_dir) / "mail-lab"
    work.mkdir(mode=0o700, exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        target = work / nb.name
        if not target.exists():
            shutil.copy(nb, target)
            os.chown(target, user.pw_uid, user.pw_gid)
    os.chown(work, user.pw_uid, user.pw_gid)


c.Spawner.pre_spawn_hook = copy_chapters

# -- a service for scripts: the classroom test and bench/classroom.py ---------------------------
if os.environ.get("MAIL_LAB_HUB_TOKEN"):
    c.JupyterHub.services = [{"name": "classroom", "api_token": os.environ["MAIL_LAB_HUB_TOKEN"]}]
    c.JupyterHub.load_roles = [{
        "name": "classroom-driver",
        "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"],
        "services": ["classroom"],
    }]
