#!/usr/bin/env python3
"""Browser test of the `mtasts serve` dashboard in a real headless Chromium.

Usage:
  python dashboard_test.py --base http://127.0.0.1:PORT --user any --password TOKEN \
      --expect expect.json --screenshots DIR [--chromium /usr/bin/chromium] \
      [--chromedriver /usr/bin/chromedriver] [--timeout 30]

expect.json:
  {"domains": {"ready.test": {"points": 10, "bars": 10, "stacks": 0, "readiness": "ready for enforce"}, ...},
   "drill": {"domain": "notyet.test", "table": "by-mx-host", "key": "mx2.notyet.test",
             "reports": ["m-n-3", "m-n-4"]}}

Exit status: 0 every check passed; 1 one or more checks failed (each one is listed, and the run
goes on after a failure); 2 bad usage, an unreadable expect file, selenium not installed, or
Chromium/chromedriver missing or not starting. Nothing is ever skipped. The last line reads
"N passed, N failed".

What it checks (headless Chromium, --headless=new, console captured at level ALL):
- over plain HTTP: / without credentials and with a wrong password answers 401 with
  WWW-Authenticate: Basic; with them 200 and a Content-Security-Policy;
- the browser's own log-in dialog (a second session, answered through WebDriver BiDi): Cancel
  shows the page titled "Log in — mtasts"; the user and token open the overview, and a link clicked
  afterwards opens its page;
- then (credentials sent as `Authorization: Basic …` on every request of the page through the
  DevTools protocol, Network.setExtraHTTPHeaders, so clicks and key presses carry them too):
  the overview lists each expected domain with its sparkline's circle.point count and readiness
  badge; each domain page has the expected rect.bar and g.stack counts, its tables and readiness;
  the drill-down link in the expected table is reached with Tab and followed with Enter and lists
  exactly the expected reports; a click opens the first one, whose pre#normalized names it and
  whose raw link answers 200 (with credentials) and 401 (without);
- on every page: no SEVERE console entry (CSP violations, failed loads; the browser's own
  /favicon.ico 404 is only noted), no <script>, every span.badge has words besides its colour,
  and no sideways scrolling (at 1280 and at 390 CSS px);
- at phone size (390×844, mobile emulation): the same pages, and each domain link on the overview
  is inside the screen, not covered, and opens its page when tapped;
- screenshots (whole page): overview-, domain-, report- × -desktop, -phone .png in --screenshots.
"""
import argparse
import base64
import contextlib
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

DESKTOP = {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}
LOGIN_TITLE = "Log in — mtasts"
DRILL_PARAMS = {"by-organization": "organization", "by-mx-host": "mx", "by-receiving-ip": "ip",
                "by-result-type": "type", "problems": None}
DOMAIN_TABLES = ["by-organization", "by-result-type", "by-mx-host", "by-receiving-ip", "reports"]


def usage_error(message):
    print(f"dashboard_test: {message}", file=sys.stderr)
    sys.exit(2)


# MARK: expectations

def load_expect(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        usage_error(f"cannot read the expect file {path}: {e}")
    problems = []
    domains = data.get("domains") if isinstance(data, dict) else None
    if not isinstance(domains, dict) or not domains:
        problems.append('"domains" must be a non-empty object')
    else:
        for name, d in domains.items():
            if not isinstance(d, dict):
                problems.append(f"domains.{name} must be an object")
                continue
            for key in ("points", "bars", "stacks"):
                if not isinstance(d.get(key), int) or isinstance(d.get(key), bool) or d[key] < 0:
                    problems.append(f"domains.{name}.{key} must be a whole number ≥ 0")
            if not isinstance(d.get("readiness"), str) or not d["readiness"]:
                problems.append(f"domains.{name}.readiness must be a non-empty string")
    drill = data.get("drill") if isinstance(data, dict) else None
    if not isinstance(drill, dict):
        problems.append('"drill" must be an object')
    else:
        for key in ("domain", "table", "key"):
            if not isinstance(drill.get(key), str) or not drill[key]:
                problems.append(f"drill.{key} must be a non-empty string")
        if drill.get("table") not in DRILL_PARAMS:
            problems.append(f"drill.table must be one of {', '.join(DRILL_PARAMS)}")
        reports = drill.get("reports")
        if not isinstance(reports, list) or not reports or not all(isinstance(r, str) and r for r in reports):
            problems.append("drill.reports must be a non-empty list of report ids")
    if problems:
        usage_error(f"bad expect file {path}:\n  " + "\n  ".join(problems))
    return data


# MARK: the record of checks

class Checks:
    def __init__(self):
        self.passed = 0
        self.failures = []
        self.notes = set()
        self.section_name = "setup"

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            text = f"[{self.section_name}] {what}" + (f": {detail}" if detail else "")
            self.failures.append(text)
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""))
        return ok

    def equal(self, actual, expected, what):
        return self.check(actual == expected, what, f"expected {expected!r}, found {actual!r}")

    @contextlib.contextmanager
    def section(self, name):
        """A group of checks; an exception in it fails the group and the run goes on."""
        self.section_name = name
        print(f"{name}:")
        try:
            yield
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            lines = traceback.format_exception_only(type(e), e)
            msg = lines[-1].strip().splitlines()[0] if lines else repr(e)
            self.check(False, "no error while checking", msg)


# MARK: plain HTTP

def fetch(url, auth=None, timeout=30):
    """(status, headers, body) of a GET; auth is (user, password) or None."""
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# MARK: the browser

def chrome_options(chromium, bidi=False):
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900", "--hide-scrollbars",
                "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if bidi:
        # WebDriver BiDi answers the browser's log-in challenge as a person at the dialog would.
        # The navigation that waits on the challenge blocks chromedriver's classic commands, so this
        # session does not wait for page loads (the checks poll instead).
        options.enable_bidi = True
        options.page_load_strategy = "none"
    return options


def preflight(chromium, chromedriver):
    """Exit 2 when the browser, its driver or selenium is missing."""
    for what, path in (("chromium", chromium), ("chromedriver", chromedriver)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            usage_error(f"{what} is missing: no executable at {path} (Debian: apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        usage_error(f"selenium is not installed ({e}); pip install -r {os.path.join(os.path.dirname(os.path.abspath(__file__)), 'requirements.txt')}")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager fetch a driver or browser


def start_browser(chromium, chromedriver, timeout):
    import selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=chrome_options(chromium))
    except Exception as e:  # noqa: BLE001
        usage_error(f"cannot start {chromium} through {chromedriver}: {str(e).strip().splitlines()[0] if str(e).strip() else repr(e)}")
    driver.set_page_load_timeout(timeout)
    print(f"selenium {selenium.__version__}, {driver.capabilities.get('browserName')} {driver.capabilities.get('browserVersion')}, "
          f"chromedriver {driver.capabilities.get('chrome', {}).get('chromedriverVersion', '?').split(' ')[0]}")
    return driver


def severe_entries(c, entries, page):
    """The SEVERE console entries, but the browser's own /favicon.ico request answered 404: the
    pages name no icon, so Chromium asks for one. That is noted, not failed (a page can say
    <link rel="icon" href="data:,"> to stop it; the CSP allows data: images)."""
    out = []
    for e in entries:
        if e.get("level") != "SEVERE":
            continue
        message = e.get("message", "")
        if "/favicon.ico - Failed to load resource" in message and "404" in message:
            c.notes.add("Chromium asked for /favicon.ico and got 404 (a SEVERE console entry, not counted as a failure): "
                        "no <link rel=\"icon\"> in the pages")
            continue
        out.append(e)
    return out


def process_tree(pid):
    """pid and its descendants (Linux /proc), children first."""
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(x) for x in f.read().split()]
    except OSError:
        children = []
    for child in children:
        out += process_tree(child)
    return out + [pid]


def kill_session(driver):
    """End a stuck session's chromedriver and browser processes, by pid."""
    import signal
    process = getattr(getattr(driver, "service", None), "process", None)
    if process is None:
        return
    for pid in process_tree(process.pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def check_login_dialog(c, base, user, password, chromium, chromedriver, timeout):
    """The browser's own log-in dialog, answered through WebDriver BiDi (network.authRequired) as a
    person would: Cancel shows the log-in page; the user and token open the dashboard, and a link
    clicked afterwards works (the browser keeps the credentials).

    While a challenge waits for its answer, chromedriver 156 answers no classic command (not even
    the title), and a classic command sent then blocks the answer too: so after each navigation
    this waits for the challenge (from its own thread, not Selenium's event thread) and answers it
    before it asks the page anything. A watchdog ends the session, by pid, if it hangs anyway."""
    import queue
    import threading
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.bidi.common import command_builder
    driver = webdriver.Chrome(service=Service(chromedriver), options=chrome_options(chromium, bidi=True))
    challenges = queue.Queue()
    done = threading.Event()
    hung = []

    def watchdog():
        if not done.wait(6 * timeout):
            hung.append(True)
            kill_session(driver)
    threading.Thread(target=watchdog, daemon=True).start()

    def on_challenge(params):
        raw = params if isinstance(params, dict) else getattr(params, "__dict__", {})
        challenges.put((raw.get("request") or {}).get("request"))

    def respond(request, action):
        params = {"request": request, "action": action}
        if action == "provideCredentials":
            params["credentials"] = {"type": "password", "username": user, "password": password}
        driver.network._conn.execute(command_builder("network.continueWithAuth", params))

    def navigate(go, action, first_wait):
        """go(), then answer the challenges that come (the first within first_wait seconds, a
        repeated one within a second): Cancel, or the credentials once (a second challenge for the
        credentials means they were refused: cancelled, so the page shows it). The answers given."""
        go()
        given = []
        wait = first_wait
        while True:
            try:
                request = challenges.get(timeout=wait)
            except queue.Empty:
                return given
            now = "cancel" if action == "cancel" or given else "provideCredentials"
            respond(request, now)
            given.append(now)
            wait = 1.0

    def shows(title):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if driver.title == title and driver.execute_script("return document.readyState") == "complete":
                    return True
            except Exception:  # noqa: BLE001 - the document is being replaced
                pass
            time.sleep(0.05)
        return False

    try:
        driver.network.add_intercept(phases=["authRequired"])
        driver.network.add_event_handler("auth_required", on_challenge)
        given = navigate(lambda: driver.get(base + "/"), "cancel", timeout)
        c.check(bool(given), "the browser is challenged for a log-in (WWW-Authenticate: Basic)")
        c.check(shows(LOGIN_TITLE), "Cancel on the browser's log-in dialog shows the log-in page", f"title {driver.title!r}")
        severe = [e for e in severe_entries(c, driver.get_log("browser"), "log-in page")
                  if not (e.get("message", "").startswith(base + "/ ") and "status of 401" in e.get("message", ""))]
        c.check(not severe, "log-in page: no SEVERE console entry (but the 401 itself)",
                "; ".join(e.get("message", "")[:300] for e in severe))
        given = navigate(lambda: driver.get(base + "/"), "credentials", timeout)
        c.check(given == ["provideCredentials"], "the browser's log-in dialog takes the user and token", f"answers {given}")
        c.check(shows("TLS reporting dashboard — mtasts"), "the user and token given to the browser's log-in dialog open the overview",
                f"title {driver.title!r}")
        links = driver.find_elements("css selector", "table#domains th a")
        if c.check(bool(links), "the overview lists a domain"):
            name = links[0].text.strip()
            navigate(links[0].click, "credentials", 2.0)
            c.check(shows(f"{name} — mtasts"), f"after logging in, a click on {name} opens its page", f"title {driver.title!r}")
    except Exception:
        if hung:
            raise TimeoutError(f"the log-in dialog session hung for {6 * timeout:.0f} s and was ended") from None
        raise
    finally:
        done.set()
        if not hung:
            try:
                driver.quit()
            except Exception:  # noqa: BLE001
                kill_session(driver)


class Browser:
    def __init__(self, driver, base, checks, timeout):
        self.d = driver
        self.base = base
        self.c = checks
        self.timeout = timeout

    # console

    def drain_console(self):
        return self.d.get_log("browser")

    def check_console(self, page, ignore=()):
        """No SEVERE console entry (script errors, CSP violations, failed loads) since the last look."""
        severe = [e for e in severe_entries(self.c, self.drain_console(), page)
                  if not any(i in e.get("message", "") for i in ignore)]
        self.c.check(not severe, f"{page}: no SEVERE console entry",
                     "; ".join(e.get("message", "")[:300] for e in severe))

    # navigation

    def wait(self, condition, what):
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")

    def loaded(self):
        self.wait(lambda: self.d.execute_script("return document.readyState") == "complete", "the page to load")

    def get(self, path):
        self.d.get(self.base + path)
        self.loaded()

    def follow(self, action, what):
        """Run action (a click or a key press) and wait for the next document."""
        from selenium.webdriver.support import expected_conditions as EC
        from selenium.webdriver.support.ui import WebDriverWait
        old = self.d.find_element("tag name", "html")
        action()
        WebDriverWait(self.d, self.timeout).until(EC.staleness_of(old), f"no navigation after {what}")
        self.loaded()

    def path(self):
        parts = urllib.parse.urlsplit(self.d.current_url)
        return parts.path + (("?" + parts.query) if parts.query else "")

    def js(self, script, *args):
        return self.d.execute_script(script, *args)

    def cdp(self, command, params=None):
        return self.d.execute_cdp_cmd(command, params or {})

    def viewport(self, metrics):
        self.cdp("Emulation.setDeviceMetricsOverride", dict(metrics))

    # page-wide checks

    def common_checks(self, page, metrics):
        """The checks every page gets: console, no script, badges with words, no sideways scrolling."""
        self.check_console(page)
        self.c.equal(self.js("return document.scripts.length"), 0, f"{page}: no <script>")
        badges = self.js("""
            return Array.from(document.querySelectorAll('span.badge')).map(b => {
              const c = b.cloneNode(true);
              c.querySelectorAll('[aria-hidden="true"]').forEach(e => e.remove());
              return [b.className, c.textContent.trim()];
            });""")
        wordless = [cls for cls, text in badges if not text]
        self.c.check(not wordless, f"{page}: each of {len(badges)} badge(s) has words, not only a colour",
                     f"{len(wordless)} badge(s) without text: {', '.join(wordless)}")
        self.no_sideways_scroll(page, metrics)

    def no_sideways_scroll(self, page, metrics):
        w = self.js("return [document.documentElement.scrollWidth, window.innerWidth]")
        scroll_width, inner = w
        self.c.check(scroll_width <= metrics["width"] + 1 and inner <= metrics["width"] + 1,
                     f"{page} at {metrics['width']}px: no sideways scrolling of the page",
                     f"scrollWidth {scroll_width}, innerWidth {inner}; wider than the viewport: {self.overflowing(metrics['width'])}")

    def overflowing(self, width):
        """The outermost elements that stick out of the viewport and are not inside a scroll box."""
        return self.js("""
            const w = arguments[0], out = [];
            const inScroller = e => { for (let p = e.parentElement; p; p = p.parentElement) {
                const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll' || o === 'hidden') return true; } return false; };
            const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '');
            for (const e of document.body.querySelectorAll('*')) {
              const r = e.getBoundingClientRect();
              if (r.right > w + 1 && r.width > 0 && !inScroller(e) && !(e.parentElement && e.parentElement.getBoundingClientRect().right > w + 1 && !inScroller(e.parentElement)))
                out.push(name(e) + ' (right edge ' + Math.round(r.right) + 'px)');
            }
            return out.slice(0, 8).join(', ') || 'none found';""", width)

    def screenshot(self, path):
        """The whole page (beyond the viewport) as PNG."""
        m = self.cdp("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        shot = self.cdp("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "fromSurface": True,
                                                   "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        self.c.check(os.path.getsize(path) > 1000, f"screenshot {os.path.basename(path)} written",
                     f"{os.path.getsize(path)} bytes")

    # keyboard

    def tab_to(self, element, limit=400):
        """Press Tab from the top of the page until element has the focus; the number of presses."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        self.js("if (document.activeElement) document.activeElement.blur(); window.scrollTo(0, 0);")
        for n in range(1, limit + 1):
            ActionChains(self.d).send_keys(Keys.TAB).perform()
            if self.js("return document.activeElement === arguments[0]", element):
                return n
        return None


# MARK: the pages

def badge_words(driver, element):
    return driver.execute_script("""
        return Array.from(arguments[0].querySelectorAll('span.badge')).map(b => {
          const c = b.cloneNode(true); c.querySelectorAll('[aria-hidden="true"]').forEach(e => e.remove());
          return c.textContent.trim(); });""", element)


def overview_rows(b):
    """{domain: {"href", "points", "readiness": [badge words in the Readiness column]}}."""
    return b.js("""
        const t = document.querySelector('table#domains'); if (!t) return null;
        const heads = Array.from(t.querySelectorAll('thead th')).map(h => h.textContent.trim());
        const ri = heads.indexOf('Readiness'), out = {};
        const words = cell => cell ? Array.from(cell.querySelectorAll('span.badge')).map(bd => {
            const c = bd.cloneNode(true); c.querySelectorAll('[aria-hidden="true"]').forEach(e => e.remove());
            return c.textContent.trim(); }) : [];
        for (const tr of t.querySelectorAll('tbody tr')) {
          const a = tr.querySelector('th a'); if (!a) continue;
          const cells = tr.children;
          out[a.textContent.trim()] = {href: a.getAttribute('href'), points: tr.querySelectorAll('svg.spark circle.point').length,
                                       sparks: tr.querySelectorAll('svg.spark').length,
                                       sparkLabel: (tr.querySelector('svg.spark') || {getAttribute: () => null}).getAttribute('aria-label'),
                                       readiness: ri >= 0 ? words(cells[ri]) : null};
        }
        return {heads: heads, rows: out};""")


def check_overview(b, expect, metrics, screenshot=None):
    c = b.c
    b.get("/")
    c.equal(b.d.title, "TLS reporting dashboard — mtasts", "overview: title")
    data = overview_rows(b)
    if not c.check(data is not None, "overview: table#domains present"):
        return
    c.check("Readiness" in data["heads"], "overview: a Readiness column", f"headers {data['heads']}")
    for domain, e in expect["domains"].items():
        row = data["rows"].get(domain)
        if not c.check(row is not None, f"overview: {domain} listed", f"listed: {sorted(data['rows'])}"):
            continue
        c.equal(row["href"], "/domains/" + urllib.parse.quote(domain, safe=".-_~"), f"overview: {domain} links to its page")
        c.equal(row["sparks"], 1, f"overview: {domain} has one sparkline svg.spark")
        c.check(bool(row["sparkLabel"]), f"overview: {domain} sparkline has a text label (aria-label)")
        c.equal(row["points"], e["points"], f"overview: {domain} sparkline circle.point count")
        c.equal(row["readiness"], [e["readiness"]], f"overview: {domain} readiness badge")
    b.common_checks("overview", metrics)
    if screenshot:
        b.screenshot(screenshot)


def check_domain_page(b, domain, e, metrics, screenshot=None):
    c = b.c
    b.get("/domains/" + urllib.parse.quote(domain, safe=".-_~"))
    page = f"domain {domain}"
    c.equal(b.d.title, f"{domain} — mtasts", f"{page}: title")
    facts = b.js("""
        const q = s => document.querySelectorAll(s);
        const legend = document.querySelector('#failure-chart + ul.legend');
        return {bars: q('svg#rate-chart rect.bar').length, rateChart: q('svg#rate-chart').length,
                rateTitle: (document.querySelector('svg#rate-chart title') || {textContent: ''}).textContent.trim(),
                stacks: q('svg#failure-chart g.stack').length,
                emptyStacks: Array.from(q('svg#failure-chart g.stack')).filter(g => g.querySelectorAll('rect.segment[data-type]').length === 0).length,
                types: Array.from(new Set(Array.from(q('svg#failure-chart rect.segment')).map(r => r.getAttribute('data-type') || ''))),
                legend: legend ? legend.textContent : null,
                failTitle: (document.querySelector('svg#failure-chart title') || {textContent: ''}).textContent.trim(),
                tables: Array.from(q('table[id]')).map(t => t.id),
                readiness: Array.from(q('h2')).filter(h => h.textContent.startsWith('Ready for enforce')).map(h => h.nextElementSibling)[0] || null};""")
    c.equal(facts["rateChart"], 1, f"{page}: svg#rate-chart present")
    c.check(bool(facts["rateTitle"]), f"{page}: svg#rate-chart has a <title>")
    c.equal(facts["bars"], e["bars"], f"{page}: rect.bar count in #rate-chart")
    c.equal(facts["stacks"], e["stacks"], f"{page}: g.stack count in #failure-chart")
    if facts["stacks"]:
        c.equal(facts["emptyStacks"], 0, f"{page}: every g.stack has rect.segment[data-type]")
        c.check(bool(facts["failTitle"]), f"{page}: svg#failure-chart has a <title>")
        missing = [t for t in facts["types"] if not t or facts["legend"] is None or t not in facts["legend"]]
        c.check(not missing, f"{page}: the legend names each result type ({', '.join(facts['types'])})", f"not in the legend: {missing}")
    for table in DOMAIN_TABLES + (["problems"] if e["readiness"] == "not ready" else []):
        c.check(table in facts["tables"], f"{page}: table#{table} present", f"tables: {facts['tables']}")
    words = badge_words(b.d, facts["readiness"]) if facts["readiness"] is not None else None
    c.equal(words, [e["readiness"]], f"{page}: readiness badge under 'Ready for enforce?'")
    b.common_checks(page, metrics)
    if screenshot:
        b.screenshot(screenshot)


def check_drill(b, expect, auth, metrics, shots):
    """Domain page → (Tab, Enter) on the key's link → the reports → click one → its page → raw."""
    c = b.c
    drill = expect["drill"]
    domain, table, key = drill["domain"], drill["table"], drill["key"]
    b.get("/domains/" + urllib.parse.quote(domain, safe=".-_~"))
    links = [a for a in b.d.find_elements("css selector", f"table#{table} a") if a.text.strip() == key]
    if not c.check(len(links) >= 1, f"drill: a link '{key}' in table#{table} of {domain}",
                   f"links there: {[a.text for a in b.d.find_elements('css selector', f'table#{table} a')]}"):
        return
    link = links[0]
    href = link.get_attribute("href")
    param = DRILL_PARAMS[table]
    if param:
        want = f"/domains/{urllib.parse.quote(domain, safe='.-_~')}/reports?{param}={urllib.parse.quote(key, safe='.-_~')}"
        c.equal(urllib.parse.urlsplit(href)._replace(scheme="", netloc="").geturl(), want, "drill: the link's address")
    presses = b.tab_to(link)
    if c.check(presses is not None, f"drill: the '{key}' link is reachable with Tab", "not focused after 400 presses"):
        print(f"        (focused after {presses} Tab presses)")
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        b.follow(lambda: ActionChains(b.d).send_keys(Keys.ENTER).perform(), "Enter on the focused link")
    else:
        b.follow(link.click, "a click on the link")
    c.check(b.path().startswith(f"/domains/{urllib.parse.quote(domain, safe='.-_~')}/reports?"),
            "drill: Enter led to the drill-down page", f"at {b.path()}")
    c.check(b.d.title != LOGIN_TITLE, "drill: still logged in after following the link", f"title {b.d.title!r}")
    ids = [a.text.strip() for a in b.d.find_elements("css selector", "table#reports tbody th a")]
    c.equal(sorted(ids), sorted(drill["reports"]), "drill: the listed report ids")
    b.common_checks("drill-down", metrics)
    drill_path = b.path()
    target = drill["reports"][0]
    report_links = [a for a in b.d.find_elements("css selector", "table#reports a") if a.text.strip() == target]
    if not c.check(bool(report_links), f"drill: a link to report {target}"):
        return drill_path, None
    b.follow(report_links[0].click, f"a click on report {target}")
    report_path = b.path()
    c.check(report_path.startswith("/reports/"), f"report {target}: the click led to /reports/ID", f"at {report_path}")
    c.equal(b.d.title, f"Report {target} — mtasts", f"report {target}: title")
    pre = b.d.find_elements("css selector", "pre#normalized")
    if c.check(len(pre) == 1, f"report {target}: pre#normalized present"):
        text = pre[0].text
        c.check(target in text, f"report {target}: pre#normalized names the report id", text[:200])
        try:
            json.loads(text)
            c.check(True, f"report {target}: pre#normalized is JSON")
        except ValueError as e:
            c.check(False, f"report {target}: pre#normalized is JSON", str(e))
    raw = [a for a in b.d.find_elements("css selector", "a") if (a.get_attribute("href") or "").endswith(report_path + "/raw")]
    if c.check(len(raw) == 1, f"report {target}: one link to {report_path}/raw"):
        raw_url = raw[0].get_attribute("href")
        status, headers, body = fetch(raw_url, auth)
        c.equal(status, 200, f"report {target}: raw link answers 200 with credentials")
        c.check(target.encode() in body, f"report {target}: the raw bytes carry the report id")
        c.check("attachment" in (headers.get("Content-Disposition") or ""), f"report {target}: raw is a download (Content-Disposition: attachment)",
                headers.get("Content-Disposition"))
        status, _, _ = fetch(raw_url, None)
        c.equal(status, 401, f"report {target}: raw link answers 401 without credentials")
    b.common_checks(f"report {target}", metrics)
    if shots:
        b.screenshot(shots)
    return drill_path, report_path


def check_phone(b, expect, drill_path, report_path, shotdir):
    c = b.c
    b.viewport(PHONE)
    b.get("/")
    c.equal(b.js("return window.innerWidth"), PHONE["width"], "phone: the viewport is 390 CSS px wide")
    b.common_checks("phone overview", PHONE)
    b.screenshot(os.path.join(shotdir, "overview-phone.png"))
    for domain in expect["domains"]:
        b.get("/")
        path = "/domains/" + urllib.parse.quote(domain, safe=".-_~")
        links = b.d.find_elements("css selector", f'table#domains th a[href="{path}"]')
        if not c.check(len(links) == 1, f"phone overview: one link to {path}"):
            continue
        a = links[0]
        b.js("arguments[0].scrollIntoView({block: 'center', inline: 'nearest'})", a)
        c.check(a.is_displayed(), f"phone overview: the {domain} link is visible")
        box = b.js("""const r = arguments[0].getBoundingClientRect();
                      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                      return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height,
                              hit: hit === arguments[0] || arguments[0].contains(hit)};""", a)
        c.check(box["left"] >= 0 and box["right"] <= PHONE["width"] + 1, f"phone overview: the {domain} link is inside the screen",
                f"left {box['left']:.0f}, right {box['right']:.0f}")
        c.check(box["hit"], f"phone overview: nothing covers the {domain} link")
        b.follow(a.click, f"a tap on {domain}")
        c.equal(b.path(), path, f"phone: the {domain} link leads to its page")
        c.check(b.d.title != LOGIN_TITLE, f"phone: still logged in on {path}")
        b.common_checks(f"phone domain {domain}", PHONE)
        if domain == expect["drill"]["domain"]:
            b.screenshot(os.path.join(shotdir, "domain-phone.png"))
    if expect["drill"]["domain"] not in expect["domains"]:
        b.get("/domains/" + urllib.parse.quote(expect["drill"]["domain"], safe=".-_~"))
        b.common_checks(f"phone domain {expect['drill']['domain']}", PHONE)
        b.screenshot(os.path.join(shotdir, "domain-phone.png"))
    if drill_path:
        b.get(drill_path)
        b.common_checks("phone drill-down", PHONE)
    if report_path:
        b.get(report_path)
        b.common_checks("phone report", PHONE)
        b.screenshot(os.path.join(shotdir, "report-phone.png"))


# MARK: main

def main():
    parser = argparse.ArgumentParser(description="Browser test of the mtasts dashboard (headless Chromium).")
    parser.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--user", required=True, help="any user name (the token is the password)")
    parser.add_argument("--password", required=True, help="reports.api_token of the serve config")
    parser.add_argument("--expect", required=True, help="the expected counts (JSON)")
    parser.add_argument("--screenshots", required=True, help="folder for the PNG screenshots (made if missing)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    parser.add_argument("--timeout", type=float, default=30, help="seconds for a page or a request")
    args = parser.parse_args()
    parts = urllib.parse.urlsplit(args.base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.username:
        usage_error(f"--base must be http(s)://HOST:PORT without a path or credentials, not {args.base!r}")
    base = args.base.rstrip("/")
    expect = load_expect(args.expect)
    try:
        os.makedirs(args.screenshots, exist_ok=True)
    except OSError as e:
        usage_error(f"cannot make the screenshot folder {args.screenshots}: {e}")
    preflight(args.chromium, args.chromedriver)
    auth = (args.user, args.password)
    checks = Checks()
    c = checks

    with c.section("without credentials (HTTP)"):
        try:
            status, headers, _ = fetch(base + "/", None, args.timeout)
        except OSError as e:
            print(f"dashboard_test: the server at {base} does not answer: {e}", file=sys.stderr)
            print("0 passed, 1 failed")
            return 1
        c.equal(status, 401, "GET / without credentials answers 401")
        c.check((headers.get("WWW-Authenticate") or "").lower().startswith("basic"), "with WWW-Authenticate: Basic",
                repr(headers.get("WWW-Authenticate")))
        status, _, _ = fetch(base + "/", (args.user, args.password + "-wrong"), args.timeout)
        c.equal(status, 401, "GET / with a wrong password answers 401")
        status, headers, _ = fetch(base + "/", auth, args.timeout)
        if not c.equal(status, 200, "GET / with the credentials answers 200"):
            print(f"dashboard_test: the dashboard refuses --user/--password (HTTP {status}); the browser checks would all fail, so they were not run",
                  file=sys.stderr)
            print(f"{c.passed} passed, {len(c.failures)} failed")
            return 1
        c.check("default-src 'none'" in (headers.get("Content-Security-Policy") or ""), "with a Content-Security-Policy (default-src 'none')",
                repr(headers.get("Content-Security-Policy")))

    driver = start_browser(args.chromium, args.chromedriver, args.timeout)
    b = Browser(driver, base, checks, args.timeout)
    shot = lambda name: os.path.join(args.screenshots, name)  # noqa: E731
    try:
        with c.section("the browser's log-in dialog"):
            check_login_dialog(c, base, args.user, args.password, args.chromium, args.chromedriver, args.timeout)

        with c.section("overview (desktop)"):
            b.cdp("Network.enable")
            b.viewport(DESKTOP)
            token = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
            b.cdp("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Basic " + token}})
            check_overview(b, expect, DESKTOP, shot("overview-desktop.png"))

        for domain, e in expect["domains"].items():
            with c.section(f"domain {domain} (desktop)"):
                check_domain_page(b, domain, e, DESKTOP, shot("domain-desktop.png") if domain == expect["drill"]["domain"] else None)
        if expect["drill"]["domain"] not in expect["domains"]:
            with c.section(f"domain {expect['drill']['domain']} (desktop)"):
                b.get("/domains/" + urllib.parse.quote(expect["drill"]["domain"], safe=".-_~"))
                b.common_checks(f"domain {expect['drill']['domain']}", DESKTOP)
                b.screenshot(shot("domain-desktop.png"))

        drill_path = report_path = None
        with c.section("drill-down (desktop, keyboard and mouse)"):
            drill_path, report_path = check_drill(b, expect, auth, DESKTOP, shot("report-desktop.png")) or (None, None)

        with c.section("phone (390×844)"):
            check_phone(b, expect, drill_path, report_path, args.screenshots)
    finally:
        driver.quit()

    print()
    for note in sorted(c.notes):
        print(f"note: {note}")
    if c.failures:
        print(f"{len(c.failures)} check(s) failed:")
        for f in c.failures:
            print(f"  - {f}")
    print(f"screenshots in {os.path.abspath(args.screenshots)}")
    print(f"{c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
