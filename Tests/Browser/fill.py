#!/usr/bin/env python3
"""Fill a running `mtasts serve` with the data set of the browser test.

Usage: python fill.py http://127.0.0.1:PORT [--days-back N]

The data set is the one of ReceiverTests `summaryAndReadinessAgainstHandComputedNumbers`, with
the days counted back from today (UTC) so that they fall in the dashboard's 30-day window:
day 9 is today, day 0 nine days ago (--days-back 1 moves all of them one day back).

  ready.test:  Google 100 ok/day, Microsoft 50 ok/day, never a failure        (ready for enforce)
  notyet.test: Google 200 ok/day, Microsoft 40 ok/day, and on days 3 and 4
               also 2 certificate-expired sessions at mx2.notyet.test /
               198.51.100.7 (reports m-n-3 and m-n-4)                        (not ready)

The report endpoint needs no credentials. Each report must be answered 201 (stored) or 200
(stored before); anything else ends the filler with exit status 1.
"""
import argparse
import datetime
import json
import sys
import urllib.error
import urllib.request


def day(offset, days_back=0):
    """Day `offset` (0…9) of the data set: day 9 is today (UTC) less `days_back` days."""
    today = datetime.datetime.now(datetime.timezone.utc).date()
    return (today - datetime.timedelta(days=9 - offset + days_back)).isoformat()


def report(org, report_id, on, domain, ok, failures=(), mode="testing"):
    """A TLS report in the RFC 8460 JSON form, as the Swift tests' `report(...)` helper makes it."""
    details = [{"result-type": f["type"], "sending-mta-ip": "192.0.2.1", "receiving-mx-hostname": f["mx"],
                "receiving-ip": f["ip"], "failed-session-count": f["count"]} for f in failures]
    return {
        "organization-name": org,
        "date-range": {"start-datetime": on + "T00:00:00Z", "end-datetime": on + "T23:59:59Z"},
        "contact-info": "tls@" + org.lower() + ".test",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts",
                       "policy-string": ["version: STSv1", "mode: " + mode, "mx: mx." + domain, "max_age: 86400"],
                       "policy-domain": domain, "mx-host": ["mx." + domain]},
            "summary": {"total-successful-session-count": ok,
                        "total-failure-session-count": sum(f["count"] for f in failures)},
            "failure-details": details,
        }],
    }


def reports(days_back=0):
    out = []
    for d in range(10):
        on = day(d, days_back)
        out.append(report("Google", f"g-r-{d}", on, "ready.test", 100))
        out.append(report("Microsoft", f"m-r-{d}", on, "ready.test", 50))
        out.append(report("Google", f"g-n-{d}", on, "notyet.test", 200))
        fails = [{"type": "certificate-expired", "count": 2, "mx": "mx2.notyet.test", "ip": "198.51.100.7"}] if d in (3, 4) else []
        out.append(report("Microsoft", f"m-n-{d}", on, "notyet.test", 40, fails))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the server, e.g. http://127.0.0.1:8080")
    parser.add_argument("--days-back", type=int, default=0, help="end the 10 days this many days before today")
    args = parser.parse_args()
    url = args.base.rstrip("/") + "/tlsrpt"
    failed = 0
    bodies = reports(args.days_back)
    for body in bodies:
        data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/tlsrpt+json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                status, text = r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except OSError as e:
            print(f"fill: cannot reach {url}: {e}", file=sys.stderr)
            return 1
        if status not in (200, 201):
            failed += 1
            print(f"fill: {body['report-id']}: HTTP {status}: {text.strip()[:300]}", file=sys.stderr)
    print(f"fill: {len(bodies) - failed} of {len(bodies)} reports stored ({day(0, args.days_back)} to {day(9, args.days_back)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
