"""The Debian packages (debian/): build, lintian, install, upgrade, remove, purge.

The packages are built once per session with `dpkg-buildpackage -us -uc -b`
in a temporary copy of the WORKING TREE (tracked files as they are on disk,
plus new files git does not ignore, such as an uncommitted debian/), so
nothing lands in the repository and uncommitted changes are what is tested.
The build uses Debian's tools only: PATH is the system's, the Python is
/usr/bin/python3.

Then, on this machine, as root: `dpkg -i` both packages, `systemd-analyze
verify` the installed unit, `otpd --check-config` as the otpd user against
the installed conffile (refused without a hash key, accepted with one), an
upgrade to a rebuilt package whose conffile changed keeps the edited one
(`--force-confold`), `dpkg -r` keeps the conffile and the user, `dpkg -P`
leaves no file, user, group or unit behind.  The machine is restored (the
packages purged, the user removed) even when a step fails.

This machine may have no systemd as PID 1: the maintainer scripts must work
without it (they enable the unit and start nothing there).

Skipped, with the reason, when not run as root, when the packaging tools
(dpkg-dev, debhelper, dh-python, pybuild-plugin-pyproject) or the build
dependencies are missing, or when otpd is already installed here (a real
installation is not to be purged by a test).
"""
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT

PKGS = ("otpd", "python3-otpd")
CONF = "/etc/otpd/otpd.conf"
UNIT = "/lib/systemd/system/otpd.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/otpd.service"
DIST = "/usr/lib/python3/dist-packages/otpd"
UPGRADE_VERSION_SUFFIX = "+upgrade1"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def say(msg):
    print("test_deb: %s" % msg, flush=True)


def clean_env(**extra):
    """Debian's tools only: no pyenv or virtualenv in PATH, no PYTHON* or
    OTPD_* variables from the caller, no repository on sys.path."""
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/root"),
           "DEBIAN_FRONTEND": "noninteractive"}
    env.update(extra)
    return env


def run(cmd, timeout=300, check=True, **kw):
    kw.setdefault("env", clean_env())
    kw.setdefault("cwd", "/")
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       stdin=subprocess.DEVNULL, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, "%s exited %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(cmd), p.returncode, p.stdout[-4000:], p.stderr[-4000:])
    return p


def dpkg_status(pkg):
    p = run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], check=False)
    return p.stdout.strip() if p.returncode == 0 else ""


def user_exists(name="otpd"):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def group_exists(name="otpd"):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def why_skip():
    if os.geteuid() != 0:
        return "not run as root: installing packages needs root"
    missing = [tool for tool, pkg in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper"),
                                      ("dh_python3", "dh-python"), ("dpkg", "dpkg"))
               if shutil.which(tool, path=SYSTEM_PATH) is None]
    if not os.path.exists("/usr/share/dh-python/dhpython/build/plugin_pyproject.py"):
        missing.append("pybuild-plugin-pyproject")
    if missing:
        return "packaging tools missing: %s" % ", ".join(missing)
    if not os.path.isfile(os.path.join(ROOT, "debian", "control")):
        return "no debian/ in the tree"
    for pkg in PKGS:
        st = dpkg_status(pkg)
        if st and st != "not-installed":
            return ("%s is already on this machine (%s); this test installs and purges it: "
                    "`dpkg -P otpd python3-otpd` first if it is a leftover" % (pkg, st))
    for path in ("/etc/otpd", "/usr/sbin/otpd", UNIT):
        if os.path.exists(path):
            return "%s exists (an otpd installed by hand?); this test would remove it" % path
    if user_exists() or group_exists():
        return "an otpd user or group exists already; this test would delete it"
    return None


def working_tree_files():
    """Tracked files as they are on disk, plus untracked files git does not
    ignore (a new debian/ or man/), relative to ROOT."""
    p = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others",
                        "--exclude-standard"], stdout=subprocess.PIPE, check=True)
    names = sorted({n for n in p.stdout.decode().split("\0") if n})
    return [n for n in names if os.path.lexists(os.path.join(ROOT, n))]


def copy_tree(dest):
    for rel in working_tree_files():
        src, dst = os.path.join(ROOT, rel), os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(src):
            os.symlink(os.readlink(src), dst)
        elif os.path.isfile(src):
            shutil.copy2(src, dst)


def build_env(home):
    jobs = min(2, os.cpu_count() or 1)
    return clean_env(HOME=home, DEB_BUILD_OPTIONS="nocheck parallel=%d" % jobs,
                     DEB_BUILD_PROFILES="nocheck")


class Build:
    """One copy of the tree, built once; rebuilt with a new version for the upgrade."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.src = os.path.join(tmp, "otpd")
        self.home = os.path.join(tmp, "home")
        os.makedirs(self.home)
        copy_tree(self.src)
        self.version = run(["dpkg-parsechangelog", "-S", "Version"], cwd=self.src).stdout.strip()
        self.arch = run(["dpkg-architecture", "-qDEB_HOST_ARCH"]).stdout.strip()
        self.timings = {}

    def debs(self, version=None):
        v = version or self.version
        return [os.path.join(self.tmp, "python3-otpd_%s_all.deb" % v),
                os.path.join(self.tmp, "otpd_%s_%s.deb" % (v, self.arch))]

    def changes(self, version=None):
        return os.path.join(self.tmp, "otpd_%s_%s.changes" % (version or self.version, self.arch))

    def build(self, *extra, what="build"):
        # Build dependencies first: a missing one is a skip, not a failure.
        p = run(["dpkg-checkbuilddeps", "-P", "nocheck"], cwd=self.src, check=False)
        if p.returncode != 0:
            pytest.skip("build dependencies missing: %s" % (p.stderr.strip() or p.stdout.strip()))
        t0 = time.monotonic()
        p = run(["dpkg-buildpackage", "-us", "-uc", "-b"] + list(extra), cwd=self.src,
                env=build_env(self.home), timeout=1800, check=False)
        self.timings[what] = time.monotonic() - t0
        log = os.path.join(self.tmp, "%s.log" % what)
        with open(log, "w") as f:
            f.write(p.stdout + p.stderr)
        assert p.returncode == 0, "dpkg-buildpackage failed (log %s):\n%s" % (
            log, (p.stdout + p.stderr)[-6000:])
        say("%s: %.1f s" % (what, self.timings[what]))

    def rebuild_upgrade(self):
        """A newer version whose conffile changed, reusing the first build's
        tree (-nc: no clean, the compiled daemon is kept)."""
        new = self.version + UPGRADE_VERSION_SUFFIX
        cl = os.path.join(self.src, "debian", "changelog")
        with open(cl) as f:
            old = f.read()
        trailer = re.search(r"^ -- .*$", old, re.M).group(0)
        with open(cl, "w") as f:
            f.write("otpd (%s) bookworm; urgency=medium\n\n  * Test upgrade.\n\n%s\n\n%s"
                    % (new, trailer, old))
        with open(os.path.join(self.src, "conf", "otpd.conf.example"), "a") as f:
            f.write("\n# changed in %s\n" % new)
        self.build("-nc", what="rebuild")
        return new


@pytest.fixture(scope="module")
def build():
    reason = why_skip()
    if reason:
        say("skipped: %s" % reason)
        pytest.skip(reason)
    tmp = tempfile.mkdtemp(prefix="otpd-deb-")
    try:
        b = Build(tmp)
        b.build()
        yield b
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def purge_everything():
    """Put the machine back: the packages purged, the otpd user and group gone."""
    installed = [p for p in PKGS if dpkg_status(p) not in ("", "not-installed")]
    if installed:
        run(["dpkg", "-P"] + installed, check=False)
    if user_exists():
        run(["userdel", "otpd"], check=False)
    if group_exists():
        run(["groupdel", "otpd"], check=False)


@pytest.fixture
def machine():
    """The packages are purged at the end, whatever happened."""
    try:
        yield
    finally:
        purge_everything()


def deb_files(deb):
    """The regular files and symlinks a package ships, as absolute paths."""
    listing = run(["dpkg", "-c", deb]).stdout
    files = []
    for line in listing.splitlines():
        if line.startswith("d"):
            continue
        path = line.split(None, 5)[5].split(" -> ")[0]
        files.append(path[1:] if path.startswith(".") else path)
    return files


def test_packages_contents(build):
    py_deb, otpd_deb = build.debs()
    otpd_files = set(deb_files(otpd_deb))
    py_files = set(deb_files(py_deb))
    for path in ("/usr/sbin/otpd", "/usr/bin/otpctl", UNIT, CONF,
                 "/usr/lib/sysusers.d/otpd.conf", "/usr/share/man/man8/otpd.8.gz",
                 "/usr/share/man/man1/otpctl.1.gz", "/usr/share/doc/otpd/copyright",
                 "/usr/share/doc/otpd/README.md", "/usr/share/doc/otpd/protocol.md.gz",
                 "/usr/share/doc/otpd/otpctl.md.gz"):
        assert path in otpd_files, path
    for path in (DIST + "/__init__.py", DIST + "/ctl/__init__.py", DIST + "/lua/limits.lua",
                 DIST + "/data/calling_codes.txt", DIST + "/django/templates/otpd/send.html",
                 DIST + "/django/otp/migrations/0001_initial.py"):
        assert path in py_files, path
    # cmake --install's private copy of the package stays out; otpctl is the
    # otpd package's only; no .pyc in the packages.
    assert not any(f.startswith("/usr/share/otpd/") for f in otpd_files)
    assert not any(f.startswith("/usr/bin/") for f in py_files)
    assert not any(f.endswith(".pyc") for f in otpd_files | py_files)

    info = run(["dpkg-deb", "-f", otpd_deb, "Depends"]).stdout
    assert "python3-otpd (= %s)" % build.version in info
    assert "systemd-sysusers" in info
    conffiles = run(["dpkg-deb", "-I", otpd_deb, "conffiles"]).stdout.split()
    assert conffiles == [CONF]
    listing = run(["dpkg", "-c", otpd_deb]).stdout
    assert re.search(r"^-rw-r----- root/root .* \./etc/otpd/otpd\.conf$", listing, re.M), listing
    assert re.search(r"^drwxr-x--- root/root .* \./etc/otpd/$", listing, re.M), listing
    pydeps = run(["dpkg-deb", "-f", py_deb, "Depends"]).stdout
    assert "python3-redis" in pydeps and "python3-dotenv" in pydeps


def test_lintian_reports_no_errors(build):
    if shutil.which("lintian", path=SYSTEM_PATH) is None:
        pytest.skip("lintian is not installed")
    t0 = time.monotonic()
    p = run(["lintian", "--tag-display-limit", "0", build.changes()], check=False, timeout=600)
    say("lintian: %.1f s" % (time.monotonic() - t0))
    tags = [line for line in p.stdout.splitlines() if re.match(r"^[EWIPXO]: ", line)]
    for line in tags:
        say("lintian: %s" % line)
    errors = [line for line in tags if line.startswith("E: ")]
    assert not errors, "\n".join(errors)
    assert p.returncode == 0, p.stdout + p.stderr


def unit_text():
    with open(UNIT) as f:
        return f.read()


def check_config_as_otpd():
    return run(["runuser", "-u", "otpd", "--", "/usr/sbin/otpd", "--check-config", "-c", CONF],
               check=False)


def assert_config_perms():
    gid = grp.getgrnam("otpd").gr_gid
    st = os.stat("/etc/otpd")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 0, gid)
    st = os.stat(CONF)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, gid)


def dpkg_install(debs, *opts):
    p = run(["dpkg", "-i"] + list(opts) + debs, check=False, timeout=600)
    if p.returncode != 0 and "dependency problems" in p.stderr:
        # Dependencies missing on this machine: let apt bring them.
        p = run(["apt-get", "install", "-y", "-o", "Dpkg::Options::=--force-confold"] + debs,
                check=False, timeout=900)
    assert p.returncode == 0, "install failed\n%s\n%s" % (p.stdout[-4000:], p.stderr[-4000:])
    return p.stdout + p.stderr


def test_install_upgrade_remove_purge(build, machine):
    t_all = time.monotonic()
    new_files = set()
    for deb in build.debs():
        new_files.update(deb_files(deb))

    # --- install ------------------------------------------------------------
    out = dpkg_install(build.debs())
    for pkg in PKGS:
        assert dpkg_status(pkg) == "installed", pkg
    # No hash key yet: enabled, not started, and the admin is told what to do.
    assert "not started" in out and "otpd --gen-key" in out, out
    assert "OTPD_HASH_KEY" in out, out

    assert run(["/usr/sbin/otpd", "--version"]).stdout.strip() == "otpd " + re.sub(
        r"[-+~].*$", "", build.version)
    text = unit_text()
    assert re.search(r"^ExecStart=/usr/sbin/otpd -c /etc/otpd/otpd\.conf$", text, re.M), text
    assert "/usr/local" not in text
    sa = shutil.which("systemd-analyze", path=SYSTEM_PATH)
    if sa:
        p = run([sa, "verify", "--man=no", UNIT], check=False)
        assert p.returncode == 0 and p.stderr.strip() == "", p.stderr
    else:
        say("systemd-analyze is not installed: the unit is not verified")
    assert os.path.realpath(WANTS) == os.path.realpath(UNIT), "the unit is not enabled"

    pw = pwd.getpwnam("otpd")
    assert pw.pw_uid < 1000 and pw.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin"), pw
    assert grp.getgrgid(pw.pw_gid).gr_name == "otpd"
    assert_config_perms()
    p = run(["dpkg-query", "-W", "-f=${Conffiles}", "otpd"])
    assert CONF in p.stdout

    # The installed conffile, as the service's user: refused without a key.
    p = check_config_as_otpd()
    assert p.returncode == 1 and "OTPD_HASH_KEY" in p.stderr, p.stderr

    # otpctl and the client come from the packages, not from this tree.
    p = run(["/usr/bin/otpctl", "--help"])
    assert "status" in p.stdout and "dead" in p.stdout
    p = run(["/usr/bin/python3", "-c",
             "import otpd, otpd.ctl, otpd.django; from importlib import resources; "
             "print(otpd.__file__); print(resources.files('otpd').joinpath('lua/limits.lua')"
             ".read_text(), end='')"])
    where, limits = p.stdout.split("\n", 1)
    assert where == DIST + "/__init__.py", where
    # The daemon and the client run the very same limits script.
    assert run(["/usr/sbin/otpd", "--print-limits-script"]).stdout == limits

    # --- the admin configures it ---------------------------------------------
    key = run(["/usr/sbin/otpd", "--gen-key"]).stdout.strip()
    assert re.fullmatch(r"OTPD_HASH_KEY=[0-9a-f]{64}", key)
    marker = "# edited by test_deb: the admin's file"
    with open(CONF, "a") as f:
        f.write("\n%s\n%s\n" % (marker, key))
    with open(CONF) as f:
        edited = f.read()
    p = check_config_as_otpd()
    assert p.returncode == 0 and "configuration OK" in p.stdout, p.stderr
    assert key.split("=")[1] not in p.stdout, "--check-config printed the key"

    # --- upgrade: a newer package whose conffile changed ---------------------
    new_version = build.rebuild_upgrade()
    out = dpkg_install(build.debs(new_version), "--force-confold")
    for pkg in PKGS:
        assert run(["dpkg-query", "-W", "-f=${Version}", pkg]).stdout == new_version
    with open(CONF) as f:
        assert f.read() == edited, "the upgrade changed the edited conffile"
    assert os.path.exists(CONF + ".dpkg-dist"), "the package's new conffile was not set aside"
    assert_config_perms()
    assert pwd.getpwnam("otpd").pw_uid == pw.pw_uid
    # A valid configuration now, but only the console provider: never started by the
    # package (it would print codes to the journal), and the admin is told why.
    assert "not started: no provider credentials" in out, out
    assert "otpd --gen-key" not in out, out
    assert check_config_as_otpd().returncode == 0
    assert os.path.realpath(WANTS) == os.path.realpath(UNIT)
    for deb in build.debs(new_version):
        new_files.update(deb_files(deb))

    # --- remove: the conffile and the user stay --------------------------------
    run(["dpkg", "-r"] + list(PKGS))
    for pkg in PKGS:
        assert dpkg_status(pkg) in ("config-files", "not-installed"), pkg
    for path in ("/usr/sbin/otpd", "/usr/bin/otpctl", UNIT, DIST,
                 "/usr/lib/sysusers.d/otpd.conf"):
        assert not os.path.lexists(path), path
    with open(CONF) as f:
        assert f.read() == edited
    assert user_exists()

    # --- purge: nothing left ---------------------------------------------------
    run(["dpkg", "-P"] + list(PKGS))
    for pkg in PKGS:
        assert dpkg_status(pkg) in ("", "not-installed"), pkg
    left = [f for f in sorted(new_files) if os.path.lexists(f)]
    assert not left, "files left after purge: %s" % left
    for path in ("/etc/otpd", WANTS, DIST,
                 "/var/lib/systemd/deb-systemd-helper-enabled/otpd.service.dsh-also",
                 "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/otpd.service"):
        assert not os.path.lexists(path), path
    assert not user_exists(), "the otpd user is still there"
    assert not group_exists(), "the otpd group is still there"
    say("install, upgrade, remove, purge: %.1f s (first build %.1f s, rebuild %.1f s)"
        % (time.monotonic() - t_all, build.timings["build"], build.timings["rebuild"]))
