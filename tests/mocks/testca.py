#!/usr/bin/python3
"""Throwaway TLS material for the provider mocks, generated with the openssl CLI.

    make_ca(dirpath) -> {"ca_cert", "ca_key", "server_cert", "server_key",
                         "wrong_ca_cert", "wrong_ca_key", "dir"}

* ca_cert / ca_key         : a self-signed test CA (EC P-256).
* server_cert / server_key : a leaf for 127.0.0.1 and localhost
                             (subjectAltName IP:127.0.0.1, DNS:localhost),
                             signed by ca_cert, serverAuth EKU.
* wrong_ca_cert            : a second, unrelated CA. Trusting only this one
                             must make verification of the server fail.

CLI:  /usr/bin/python3 tests/mocks/testca.py DIR   (prints the paths as JSON)
"""
import json
import os
import subprocess
import sys

_DAYS = "30"


def _run(args, cwd):
    proc = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s"
                           % (" ".join(args), proc.returncode, proc.stderr.strip()))


def _ec_key(path, cwd):
    _run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-out", path], cwd)
    os.chmod(os.path.join(cwd, path), 0o600)


def _self_signed_ca(key, cert, cn, cwd):
    _ec_key(key, cwd)
    _run(["req", "-x509", "-new", "-key", key, "-out", cert, "-days", _DAYS,
          "-sha256", "-subj", "/O=otpd tests/CN=" + cn,
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"], cwd)


def make_ca(dirpath):
    """Create a test CA, a server cert for 127.0.0.1/localhost, and an
    unrelated 'wrong' CA in dirpath (created if needed). Returns paths."""
    d = os.path.abspath(str(dirpath))
    os.makedirs(d, exist_ok=True)

    _self_signed_ca("ca.key", "ca.pem", "otpd test CA", d)
    _self_signed_ca("wrong-ca.key", "wrong-ca.pem", "otpd WRONG test CA", d)

    _ec_key("server.key", d)
    _run(["req", "-new", "-key", "server.key", "-out", "server.csr",
          "-subj", "/O=otpd tests/CN=localhost"], d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid:always\n")
    _run(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
          "-set_serial", "0x" + os.urandom(8).hex(), "-days", _DAYS, "-sha256",
          "-extfile", "server.ext", "-out", "server.pem"], d)

    return {
        "dir": d,
        "ca_cert": os.path.join(d, "ca.pem"),
        "ca_key": os.path.join(d, "ca.key"),
        "server_cert": os.path.join(d, "server.pem"),
        "server_key": os.path.join(d, "server.key"),
        "wrong_ca_cert": os.path.join(d, "wrong-ca.pem"),
        "wrong_ca_key": os.path.join(d, "wrong-ca.key"),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: %s DIR\n" % sys.argv[0])
        sys.exit(2)
    print(json.dumps(make_ca(sys.argv[1]), indent=2))
