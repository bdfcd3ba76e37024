"""Headless Chromium for the browser tests (test_browser.py).

Browser.start() runs the Debian chromium through chromium-driver and
python3-selenium, or says why it cannot (why_not(), BrowserUnavailable) so
that the tests skip with that reason.  Every step a test takes is timed and
ends with a screenshot ("NN-name.png" in the output directory); table()
prints them.  quit() always leaves no chromedriver or chromium behind: the
processes still using this browser's own profile directory are killed by
pid after the driver's quit.
"""
import contextlib
import os
import re
import shutil
import signal
import tempfile
import time

CHROMIUM = os.environ.get("OTPD_CHROMIUM") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("OTPD_CHROMEDRIVER") or "/usr/bin/chromedriver"
WINDOW = (1280, 900)
FLAGS = [
    "--headless=new", "--no-sandbox",  # root has no sandbox
    "--disable-gpu", "--disable-dev-shm-usage",
    "--window-size=%d,%d" % WINDOW,
    # Nothing but the test's server on loopback: no proxy, no background traffic.
    "--no-proxy-server", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--password-store=basic", "--use-mock-keychain",
]


class BrowserUnavailable(Exception):
    """Chromium, its driver or selenium is missing, or Chromium did not start."""


def why_not():
    """Why the browser tests cannot run here, or None."""
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return "%s not found (apt-get install %s)" % (path, pkg)
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (apt-get install python3-selenium)"
    return None


def _slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "page"


class Browser:
    def __init__(self, outdir, base_url=""):
        self.outdir = str(outdir)
        self.base_url = base_url.rstrip("/")
        self.driver = None
        self.profile = None
        self.steps = []       # (test, step, seconds, screenshot file or "")
        self.test = ""        # the current test, for the table
        self._n = 0

    # --- life cycle -----------------------------------------------------------

    def start(self):
        reason = why_not()
        if reason:
            raise BrowserUnavailable(reason)
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        os.makedirs(self.outdir, exist_ok=True)
        self.profile = tempfile.mkdtemp(prefix="otpd-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in FLAGS + ["--user-data-dir=" + self.profile]:
            opts.add_argument(flag)
        # Selenium talks to chromedriver on loopback: never through a proxy.
        opts.ignore_local_proxy_environment_variables()
        service = Service(executable_path=CHROMEDRIVER,
                          log_path=os.path.join(self.outdir, "chromedriver.log"))
        t0 = time.monotonic()
        try:
            self.driver = webdriver.Chrome(service=service, options=opts)
        except WebDriverException as e:
            self.quit()  # the driver's own cleanup ran; this removes what is left
            first = ((e.msg or str(e)).strip().splitlines() or [repr(e)])[0]
            raise BrowserUnavailable("Chromium did not start: %s (see %s)" % (
                first, os.path.join(self.outdir, "chromedriver.log"))) from e
        self.driver.set_page_load_timeout(30)
        self.driver.set_window_size(*WINDOW)
        self.version = self.driver.capabilities.get("browserVersion", "?")
        self.steps.append(("(setup)", "start Chromium %s" % self.version,
                           time.monotonic() - t0, ""))
        return self

    def quit(self):
        """Quit the browser and the driver; kill by pid whatever still runs
        with this browser's profile (a crashed renderer, a hung driver)."""
        driver, self.driver = self.driver, None
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
            try:
                proc = driver.service.process
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            except Exception:
                pass
        if self.profile:
            deadline = time.monotonic() + 5
            while True:
                left = self.leftover_pids()
                if not left or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def leftover_pids(self):
        """Processes whose command line names this browser's profile."""
        if not self.profile:
            return []
        mark = ("--user-data-dir=" + self.profile).encode()
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open("/proc/%s/cmdline" % d, "rb") as f:
                    if mark in f.read():
                        pids.append(int(d))
            except OSError:
                pass
        return pids

    # --- pages ----------------------------------------------------------------

    def get(self, path):
        self.driver.get(self.base_url + path)

    def path(self):
        from urllib.parse import urlsplit
        return urlsplit(self.driver.current_url).path

    def find(self, element_id):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.ID, element_id)

    def present(self, element_id):
        from selenium.webdriver.common.by import By
        return bool(self.driver.find_elements(By.ID, element_id))

    def type(self, element_id, text):
        el = self.find(element_id)
        el.clear()
        el.send_keys(text)
        return el

    def click(self, element_id):
        self.find(element_id).click()

    def click_and_wait(self, button, timeout=15):
        """Click a button or link (its id, or the element) and wait until the
        next page has loaded: a new document (the old one carried a mark in
        its window) whose readyState is complete.  Chromedriver can answer a
        look-up racing with the navigation with an "unknown error" rather than
        a stale element, so the check ignores any WebDriverException."""
        from selenium.common.exceptions import WebDriverException
        what = "#" + button if isinstance(button, str) else "the element clicked"
        el = self.find(button) if isinstance(button, str) else button
        self.driver.execute_script("window.__otpdOldPage = true;")
        el.click()

        def loaded(d):
            try:
                return d.execute_script(
                    "return !window.__otpdOldPage && document.readyState === 'complete';")
            except WebDriverException:
                return False
        self.wait(loaded, timeout, "the page after %s to load" % what)

    def wait(self, cond, timeout=15, what="condition"):
        from selenium.webdriver.support.ui import WebDriverWait
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            cond, "timed out after %ss waiting for %s" % (timeout, what))

    def errors(self, list_id):
        """The items of the error list with that id ([] if there is none)."""
        from selenium.webdriver.common.by import By
        lists = self.driver.find_elements(By.ID, list_id)
        if not lists:
            return []
        return [li.text for li in lists[0].find_elements(By.TAG_NAME, "li")]

    def assert_no_server_error(self):
        """The page is not Django's error page (a 500 shows one with DEBUG)."""
        title = self.driver.title
        src = self.driver.page_source
        assert "Server Error" not in title and "Traceback" not in src and \
            'id="summary"' not in src, "server error page at %s: %s" % (
                self.driver.current_url, title)

    # --- steps, screenshots, the table ------------------------------------------

    def shot(self, name):
        self._n += 1
        fname = "%02d-%s.png" % (self._n, _slug(name))
        self.driver.save_screenshot(os.path.join(self.outdir, fname))
        return fname

    @contextlib.contextmanager
    def step(self, name, shot=True):
        """Time a step; a screenshot of the page it ends on (or failed on)."""
        t0 = time.monotonic()
        try:
            yield
        except BaseException:
            fname = ""
            with contextlib.suppress(Exception):
                fname = self.shot(name + "-FAILED") if self.driver else ""
            self.steps.append((self.test, name + " (FAILED)", time.monotonic() - t0, fname))
            raise
        secs = time.monotonic() - t0
        self.steps.append((self.test, name, secs, self.shot(name) if shot else ""))

    def table(self):
        rows = [("test", "step", "seconds", "screenshot")]
        rows += [(t, s, "%.2f" % secs, f) for t, s, secs, f in self.steps]
        total = sum(secs for _t, _s, secs, _f in self.steps)
        rows.append(("", "total", "%.2f" % total, ""))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        line = "  ".join
        out = [line(r[i].ljust(w[i]) if i != 2 else r[i].rjust(w[i]) for i in range(4)).rstrip()
               for r in rows]
        out.insert(1, line("-" * w[i] for i in range(4)))
        out.insert(len(out) - 1, line("-" * w[i] for i in range(4)))
        return "\n".join(out)
