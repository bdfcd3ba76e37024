"""python/ as a package: build the sdist and wheel offline, install the wheel
into a fresh venv, and use it from there.

The build runs on a copy of python/, so no build/, dist/ or *.egg-info lands
in the repository.  Everything is offline: `python3 -m build --no-isolation`
with Debian's python3-build, python3-setuptools and python3-wheel, and the
venv sees the system's redis, dotenv and Django (--system-site-packages), so
pip resolves the dependencies without an index.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from conftest import ROOT

PY = sys.executable          # /usr/bin/python3 under ./dev test
SRC = os.path.join(ROOT, "python")
PKG = os.path.join(SRC, "otpd")
# Directories, anywhere under otpd/django, whose every file must ship (the
# Django apps grow templates, static files, translations and migrations).
DJANGO_DATA_DIRS = {"templates", "static", "locale", "migrations"}


def clean_env():
    """The environment without anything that would put the repository (or a
    user's site, or a pip configuration) in front of the installed package."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(cmd, cwd, timeout=120):
    return subprocess.run(cmd, cwd=cwd, env=clean_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def cmake_version():
    with open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8") as f:
        m = re.search(r"project\(otpd\s+VERSION\s+([0-9.]+)", f.read())
    assert m, "no project(otpd VERSION x.y.z) in CMakeLists.txt"
    return m.group(1)


def expected_files():
    """Paths relative to python/ that both the sdist and the wheel must hold."""
    want = set()
    for pattern in ("otpd/lua/*.lua", "otpd/data/*"):
        want.update(os.path.relpath(p, SRC) for p in glob.glob(os.path.join(SRC, pattern))
                    if os.path.isfile(p))
    django = os.path.join(PKG, "django")
    for dirpath, dirnames, filenames in os.walk(django):
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        if DJANGO_DATA_DIRS & set(os.path.relpath(dirpath, django).split(os.sep)):
            want.update(os.path.relpath(os.path.join(dirpath, n), SRC) for n in filenames
                        if not n.endswith((".pyc", ".pyo")) and not n.startswith("."))
    for dirpath, dirnames, filenames in os.walk(PKG):        # every module
        dirnames[:] = [n for n in dirnames if n != "__pycache__"]
        want.update(os.path.relpath(os.path.join(dirpath, n), SRC) for n in filenames
                    if n.endswith(".py"))
    return want


def _ignore_litter(top):
    def ignore(path, names):
        drop = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}
        if os.path.samefile(path, top):
            drop |= {n for n in names if n in ("build", "dist") or n.endswith(".egg-info")}
        return drop
    return ignore


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist path, wheel path), built from a copy of python/."""
    for mod in ("build", "setuptools", "wheel", "venv"):
        if run([PY, "-c", "import " + mod], cwd="/").returncode:
            pytest.skip("%s cannot import %s (Debian: python3-build python3-setuptools "
                        "python3-wheel python3-venv)" % (PY, mod))
    tmp = tmp_path_factory.mktemp("pkg")
    src = str(tmp / "src")
    shutil.copytree(SRC, src, ignore=_ignore_litter(SRC))
    out = str(tmp / "dist")
    p = run([PY, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", out, src],
            cwd=str(tmp))
    assert p.returncode == 0, p.stdout[-4000:]
    sdists = glob.glob(os.path.join(out, "otpd-*.tar.gz"))
    wheels = glob.glob(os.path.join(out, "otpd-*-py3-none-any.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return sdists[0], wheels[0]


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory):
    """A fresh venv with the wheel installed: its python and its bin directory."""
    tmp = tmp_path_factory.mktemp("venv")
    root = str(tmp / "venv")
    p = run([PY, "-m", "venv", "--without-pip", "--system-site-packages", root], cwd=str(tmp))
    if p.returncode:
        pytest.skip("cannot create a venv (Debian: python3-venv): " + p.stdout[-500:])
    vpy = os.path.join(root, "bin", "python")
    wheel = dists[1]
    # A real installer, offline: Debian's pip (python3-pip, seen through
    # --system-site-packages), else the venv's own pip from ensurepip, else
    # python3-installer.
    if run([vpy, "-m", "pip", "--version"], cwd=str(tmp)).returncode:
        run([vpy, "-m", "ensurepip", "--default-pip"], cwd=str(tmp))
    if run([vpy, "-m", "pip", "--version"], cwd=str(tmp)).returncode == 0:
        # Dependencies are checked too: they must be met by the system's packages.
        cmd = [vpy, "-m", "pip", "install", "--isolated", "--no-index", "--no-cache-dir",
               "--disable-pip-version-check", wheel]
    elif run([vpy, "-c", "import installer"], cwd=str(tmp)).returncode == 0:
        cmd = [vpy, "-m", "installer", wheel]
    else:
        pytest.skip("no offline installer for the wheel: neither pip (python3-pip, or "
                    "ensurepip from python3-venv) nor python3-installer")
    p = run(cmd, cwd=str(tmp))
    assert p.returncode == 0, p.stdout[-4000:]
    return vpy, os.path.join(root, "bin")


def test_version_is_the_daemons():
    import otpd
    assert otpd.__version__ == cmake_version()


def test_sdist_and_wheel_hold_the_scripts_and_data(dists):
    sdist, wheel = dists
    version = cmake_version()
    assert os.path.basename(sdist) == "otpd-%s.tar.gz" % version
    assert os.path.basename(wheel) == "otpd-%s-py3-none-any.whl" % version
    want = expected_files()
    assert {"otpd/lua/verify.lua", "otpd/lua/limits.lua", "otpd/data/calling_codes.txt",
            "otpd/data/twilio_errors.tsv"} <= want

    prefix = "otpd-%s/" % version
    with tarfile.open(sdist) as t:
        in_sdist = {n[len(prefix):] for n in t.getnames() if n.startswith(prefix)}
    assert not want - in_sdist, "missing from the sdist: %s" % sorted(want - in_sdist)
    assert "pyproject.toml" in in_sdist and "README.md" in in_sdist

    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        ep = z.read("otpd-%s.dist-info/entry_points.txt" % version).decode()
        meta = z.read("otpd-%s.dist-info/METADATA" % version).decode()
    assert not want - in_wheel, "missing from the wheel: %s" % sorted(want - in_wheel)
    assert not [n for n in in_wheel if "__pycache__" in n or n.endswith(".pyc")]
    assert re.search(r"^otpctl = otpd\.ctl:main$", ep, re.M), ep
    requires = re.findall(r"^Requires-Dist: (.*)$", meta, re.M)
    assert any(r.startswith("redis") for r in requires), requires
    assert any(r.startswith("python-dotenv") for r in requires), requires
    assert any(r.startswith("Django") and "extra == 'django'" in r for r in requires), requires


PROBE = r"""
import importlib.util, json, os, sys
import otpd, otpd.client, otpd.ctl
from otpd.ctl.hints import TWILIO_ERRORS
here = os.path.dirname(otpd.__file__)
out = {"file": otpd.__file__, "version": otpd.__version__, "prefix": sys.prefix,
       "verify": otpd.client.VERIFY_LUA, "limits": otpd.client.LIMITS_LUA,
       "lua": sorted(n for n in os.listdir(os.path.join(here, "lua"))),
       "country": otpd.country_code("+919812345678"), "twilio_errors": len(TWILIO_ERRORS),
       "django": None}
if importlib.util.find_spec("django"):
    import otpd.django
    out["django"] = otpd.django.__file__
print(json.dumps(out))
"""


def test_the_installed_package_works_from_a_fresh_venv(venv, tmp_path):
    vpy, bindir = venv
    p = run([vpy, "-c", PROBE], cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout
    got = json.loads(p.stdout.strip().splitlines()[-1])
    # The installed copy, not the repository's python/.
    assert got["file"].startswith(got["prefix"] + os.sep), got["file"]
    assert not got["file"].startswith(ROOT + os.sep)
    assert got["version"] == cmake_version()
    for name in ("verify", "limits"):
        with open(os.path.join(PKG, "lua", name + ".lua"), encoding="utf-8") as f:
            assert got[name] == f.read()
    assert got["lua"] == sorted(os.path.basename(p) for p in glob.glob(os.path.join(PKG, "lua", "*.lua")))
    assert got["country"] == "91"                      # data/calling_codes.txt
    assert got["twilio_errors"] > 0                    # data/twilio_errors.tsv
    if got["django"] is None:
        print("Django is not importable here (Debian: python3-django); otpd.django not imported")
    else:
        assert got["django"].startswith(got["prefix"] + os.sep), got["django"]


def test_the_otpctl_console_script(venv, tmp_path):
    vpy, bindir = venv
    otpctl = os.path.join(bindir, "otpctl")
    assert os.access(otpctl, os.X_OK)
    p = run([otpctl, "--help"], cwd=str(tmp_path), timeout=30)
    assert p.returncode == 0, p.stdout
    assert p.stdout.startswith("usage: otpctl"), p.stdout
    # main()'s return value becomes the exit status: 2 for a configuration-file error.
    p = run([otpctl, "-c", str(tmp_path / "missing.env"), "status"], cwd=str(tmp_path),
            timeout=30)
    assert p.returncode == 2, p.stdout
    assert "missing.env" in p.stdout
