#!/usr/bin/env python3
"""Writes demo TLS reports (RFC 8460 JSON) for the last 14 UTC days into a folder, so that
`mtasts serve`'s dashboard has something to show on a first run (scripts/quickstart.sh):
example.org in testing with three senders that all succeed (ready for enforce), example.net
in testing where one sender fails certificate validation at an old MX on some days and
another reports STARTTLS missing once (not ready). Usage: demo_reports.py DIR"""
import datetime, json, os, sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
today = datetime.datetime.now(datetime.timezone.utc).date()
senders = [("Google Inc.", 1200), ("Microsoft Corporation", 640), ("Mail.Ru", 90)]
n = 0
for back in range(14, 0, -1):
    day = today - datetime.timedelta(days=back)
    for domain, mxs in (("example.org", ["mx1.example.org", "mx2.example.org"]), ("example.net", ["mail.example.net"])):
        for org, base in senders:
            ok = base + (back * 37 + len(org)) % 50
            failures = []
            if domain == "example.net" and org == "Microsoft Corporation" and back % 3 == 0:
                failures.append({"result-type": "certificate-expired", "sending-mta-ip": "203.0.113.5",
                                 "receiving-mx-hostname": "old-mx.example.net", "receiving-ip": "198.51.100.20",
                                 "failed-session-count": 12 + back})
            if domain == "example.net" and org == "Mail.Ru" and back == 4:
                failures.append({"result-type": "starttls-not-supported", "sending-mta-ip": "203.0.113.9",
                                 "receiving-mx-hostname": "mail.example.net", "receiving-ip": "198.51.100.21",
                                 "failed-session-count": 3})
            report = {
                "organization-name": org,
                "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
                "contact-info": "smtp-tls-reporting@" + org.split()[0].lower().replace(".", "") + ".example",
                "report-id": f"demo-{day}-{domain}-{org.split()[0].lower()}",
                "policies": [{
                    "policy": {"policy-type": "sts", "policy-domain": domain,
                               "policy-string": ["version: STSv1", "mode: testing"] + [f"mx: {m}" for m in mxs] + ["max_age: 604800"],
                               "mx-host": mxs},
                    "summary": {"total-successful-session-count": ok,
                                "total-failure-session-count": sum(f["failed-session-count"] for f in failures)},
                    "failure-details": failures,
                }],
            }
            n += 1
            with open(os.path.join(out, f"demo-{n:03}.json"), "w") as f:
                json.dump(report, f)
print(f"{n} demo reports in {out}")
