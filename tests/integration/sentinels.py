"""A Sentinel-managed Redis on loopback for tests: a primary, its replicas and
three redis-sentinel processes, each with its own directory and log file.

Use it from a fixture with yield so that stop() always runs:

    @pytest.fixture
    def cluster(tmp_path):
        c = SentinelCluster(tmp_path)
        yield c
        c.stop()

It lives here rather than in conftest.py so that a test module imports only
what it uses.  The servers are conftest's RedisServer, made replicas with
REPLICAOF, so they log and stop the same way as everywhere else.
"""
import os
import shutil
import signal
import subprocess

import redis

from conftest import RedisServer, free_port, wait_for

SENTINEL_BIN = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
# Long enough for a vote that splits and is retried once.
PROMOTION_TIMEOUT = 30.0


class SentinelCluster:
    """A primary, `replicas` replicas and `sentinels` sentinels watching them
    as `master_name`, started and in agreement when the constructor returns.

    The quorum is a majority of the sentinels (2 of 3).  With
    sentinel_password the sentinels have requirepass (and use it with each
    other).  A constructor that fails stops whatever it had started before
    raising.
    """

    def __init__(self, tmpdir, master_name="mymaster", replicas=1, sentinels=3,
                 down_after_ms=1000, failover_timeout_ms=3000, sentinel_password=None):
        self.dir = str(tmpdir)
        self.master_name = master_name
        self.sentinel_password = sentinel_password
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.servers = {}        # port -> RedisServer, killed ones included
        self.sentinel_ports = []
        self._procs = []         # the sentinels' Popen objects
        try:
            self._start(replicas, sentinels)
        except BaseException:
            self.stop()
            raise

    @property
    def sentinels(self):
        """OTPD_REDIS_SENTINELS for this cluster: "127.0.0.1:p1,127.0.0.1:p2,..."."""
        return ",".join("127.0.0.1:%d" % p for p in self.sentinel_ports)

    # --- starting ---------------------------------------------------------

    def _start(self, replicas, sentinels):
        primary = self._server()
        for _ in range(replicas):
            self._replica_of(self._server(), primary.port)
        for i in range(sentinels):
            self._start_sentinel(i, primary.port, sentinels // 2 + 1)
        self._wait("every sentinel to see the primary, %d replica(s) and the other "
                   "sentinels" % replicas,
                   lambda: self._sentinels_alive() and
                   all(self._sentinel_sees(p, primary.port, replicas, sentinels - 1)
                       for p in self.sentinel_ports))

    def _server(self):
        d = os.path.join(self.dir, "redis-%d" % len(self.servers))
        os.makedirs(d, exist_ok=True)
        srv = RedisServer(d)
        self.servers[srv.port] = srv  # before start(), so that stop() finds it
        _start(srv)
        return srv

    def _replica_of(self, srv, master_port):
        """Make srv a replica and wait for its link: a sentinel learns replicas
        from the primary's INFO, and only promotes one that is in sync."""
        with srv.client() as c:
            c.replicaof("127.0.0.1", master_port)
            self._wait("127.0.0.1:%d to sync from :%d" % (srv.port, master_port),
                       lambda: c.info("replication").get("master_link_status") == "up")

    def _start_sentinel(self, i, master_port, quorum):
        d = os.path.join(self.dir, "sentinel-%d" % i)
        os.makedirs(d, exist_ok=True)
        port = free_port()
        name = self.master_name
        lines = ["port %d" % port, "bind 127.0.0.1", "daemonize no", "dir %s" % d,
                 "logfile %s" % os.path.join(d, "sentinel.log"),
                 "sentinel resolve-hostnames no",
                 "sentinel monitor %s 127.0.0.1 %d %d" % (name, master_port, quorum),
                 "sentinel down-after-milliseconds %s %d" % (name, self.down_after_ms),
                 "sentinel failover-timeout %s %d" % (name, self.failover_timeout_ms),
                 "sentinel parallel-syncs %s 1" % name]
        if self.sentinel_password:
            lines += ["requirepass %s" % self.sentinel_password,
                      "sentinel sentinel-pass %s" % self.sentinel_password]
        conf = os.path.join(d, "sentinel.conf")  # sentinels rewrite theirs: one each
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.sentinel_ports.append(port)
        # A config error is printed before the log file is opened.
        with open(os.path.join(d, "stderr.log"), "ab") as err:
            self._procs.append(subprocess.Popen([SENTINEL_BIN, conf], stdout=err, stderr=err))

    def _sentinels_alive(self):
        """True, or AssertionError at once for a sentinel that exited (its
        config refused, say) rather than a wait to the timeout."""
        for port, p in zip(self.sentinel_ports, self._procs):
            if p.poll() is not None:
                raise AssertionError("redis-sentinel on port %d exited with %d"
                                     % (port, p.returncode))
        return True

    def _sentinel(self, port):
        return redis.Redis(port=port, password=self.sentinel_password, decode_responses=True,
                           socket_timeout=1)

    def _sentinel_sees(self, port, master_port, replicas, others):
        try:
            with self._sentinel(port) as s:
                m = s.execute_command("SENTINEL", "MASTER", self.master_name)
        except redis.RedisError:
            return False
        m = dict(zip(m[::2], m[1::2]))
        return (m.get("port") == str(master_port) and int(m["num-slaves"]) >= replicas
                and int(m["num-other-sentinels"]) >= others)

    # --- asking -----------------------------------------------------------

    def _addr_from(self, port):
        try:
            with self._sentinel(port) as s:
                a = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        except redis.RedisError:
            return None
        return (a[0], int(a[1])) if a else None

    def master_addr(self):
        """(host, port) of the master, from the first sentinel that answers."""
        for port in self.sentinel_ports:
            a = self._addr_from(port)
            if a:
                return a
        raise AssertionError("no sentinel knows %r" % self.master_name)

    def master_client(self, **kw):
        """A plain client of the current master (close it when done)."""
        host, port = self.master_addr()
        return redis.Redis(host=host, port=port, decode_responses=True, **kw)

    # --- failing over -----------------------------------------------------

    def failover(self):
        """SENTINEL FAILOVER, then wait until every sentinel names a new master
        that answers ROLE as a master.  Returns the new (host, port).

        The old master is demoted some seconds later (+convert-to-slave);
        until then it still takes writes from clients connected to it.
        """
        old = self.master_addr()
        with self._sentinel(self.sentinel_ports[0]) as s:
            s.execute_command("SENTINEL", "FAILOVER", self.master_name)
        return self.wait_promoted(old)

    def kill_master(self, wait=True):
        """SIGKILL the master's process and (unless wait=False, then call
        wait_promoted) wait until the sentinels have promoted a replica.
        Returns the killed (host, port), for restart()."""
        old = self.master_addr()
        self.servers[old[1]].stop(sig_kill=True)
        if wait:
            self.wait_promoted(old)
        return old

    def restart(self, addr):
        """Start a killed server again on its port, as a replica of the current
        master (it comes back empty and syncs)."""
        srv = self.servers[addr[1]]
        _start(srv)
        self._replica_of(srv, self.master_addr()[1])

    def wait_synced(self):
        """Wait until every running server but the master is its replica with
        the link up: after failover(), until the old master is demoted (some
        10 s), a second failover would promote a replica that is behind."""
        master = self.master_addr()

        def synced():
            for port, srv in self.servers.items():
                if srv.proc is None or port == master[1]:
                    continue
                try:
                    with srv.client(socket_timeout=1) as c:
                        info = c.info("replication")
                except redis.RedisError:
                    return False
                if (info.get("role") != "slave" or info.get("master_port") != master[1]
                        or info.get("master_link_status") != "up"):
                    return False
            return True
        self._wait("every replica to sync from %s:%d" % master, synced, timeout=PROMOTION_TIMEOUT)

    def wait_promoted(self, old):
        """Wait until every sentinel names a master other than `old` (host,
        port) and it answers ROLE as a master; returns its (host, port)."""
        def promoted():
            addrs = {self._addr_from(p) for p in self.sentinel_ports}
            if len(addrs) != 1 or None in addrs or old in addrs:
                return None
            new = addrs.pop()
            try:
                with redis.Redis(host=new[0], port=new[1], decode_responses=True,
                                 socket_timeout=1) as c:
                    return new if c.execute_command("ROLE")[0] == "master" else None
            except redis.RedisError:
                return None
        return self._wait("the sentinels to replace %s:%d" % old, promoted,
                          timeout=PROMOTION_TIMEOUT)

    def _wait(self, what, pred, timeout=15.0):
        """wait_for, with the sentinels' log tails in the failure message."""
        try:
            return wait_for(pred, timeout, interval=0.05, what=what)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, self.log_tails())) from None

    def log_tails(self, lines=15):
        out = []
        for i in range(len(self.sentinel_ports)):
            for name in ("stderr.log", "sentinel.log"):
                path = os.path.join(self.dir, "sentinel-%d" % i, name)
                try:
                    with open(path, errors="replace") as f:
                        tail = f.read().splitlines()[-lines:]
                except OSError:
                    continue
                if tail:
                    out.append("--- %s\n%s" % (path, "\n".join(tail)))
        return "\n".join(out)

    # --- stopping ---------------------------------------------------------

    def stop(self):
        """Stop every process, sentinels first (so they do not react to the
        servers going away).  Safe to call twice and after a failed start."""
        for p in self._procs:
            _end(p)
        self._procs = []
        for srv in self.servers.values():
            if srv.proc is not None:
                _end(srv.proc)
                srv.proc = None


def _start(srv):
    srv.start()
    # Any server may become the master: no 5 s wait before a full sync.
    with srv.client() as c:
        c.config_set("repl-diskless-sync-delay", 0)


def _end(proc):
    """SIGTERM, then SIGKILL if it has not exited after 5 s; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
