#!/usr/bin/env python3
"""Fills an mtasts report database (made by `mtasts reports list --database DB`) with 30,000
reports (100 domains x 30 days of October 2026 x 10 senders) and 1,000,000 failure-detail rows,
written into the schema directly, with the roll-up ingestion keeps. Usage: million_db.py DB"""
import random, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
random.seed(7)
orgs = ["Google LLC", "Microsoft Corporation", "Mail.Ru", "Yahoo", "Comcast", "Proton", "Fastmail", "GMX", "Zoho", "Apple"]
types = ["certificate-expired", "certificate-host-mismatch", "starttls-not-supported", "validation-failure", "sts-policy-fetch-error", "certificate-not-trusted"]
db.executemany("INSERT INTO organizations (id, name, first_seen, last_seen) VALUES (?, ?, 0, 0)", [(i + 1, o) for i, o in enumerate(orgs)])
reports, policies, failures = [], [], []
rid = 0
for d in range(100):
    domain = f"d{d}.example"
    for day in range(30):
        dayname = f"2026-10-{day + 1:02}" if day < 31 else None
        for o in range(len(orgs)):
            rid += 1
            reports.append((rid, o + 1, f"r{rid}", 1790000000 + day * 86400, 1790000000 + day * 86400 + 86399, dayname, 0, "https", 1000, 33, "{}", b""))
            policies.append((rid, rid, o + 1, dayname, "sts", domain, "version: STSv1\nmode: testing", "testing", f"mx.{domain}", 1000, 33))
            for k in range(33 if rid % 3 else 34):
                failures.append((rid, rid, o + 1, dayname, domain, "sts", "testing", random.choice(types), "192.0.2.1", f"mx{k % 3}.{domain}", None, f"198.51.100.{k % 50}", 1))
db.executemany("INSERT INTO reports (id, organization_id, report_id, start_date, end_date, day, received_at, channel, successful, failed, normalized, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", reports)
db.executemany("INSERT INTO report_policies (id, report, organization_id, day, policy_type, policy_domain, policy_string, mode, mx_hosts, successful, failed) VALUES (?,?,?,?,?,?,?,?,?,?,?)", policies)
failures = failures[:1000000]
db.executemany("INSERT INTO failure_details (report, policy, organization_id, day, policy_domain, policy_type, mode, result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, failed_sessions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", failures)
# As ingestion keeps it (ReportStore.store): failed sessions per domain, day and dimension.
for kind, column in (("result-type", "result_type"), ("mx-host", "receiving_mx_hostname"), ("receiving-ip", "receiving_ip")):
    db.execute(f"INSERT INTO failure_rollup SELECT policy_domain, day, '{kind}', COALESCE({column}, '(not reported)'), SUM(failed_sessions) FROM failure_details GROUP BY 1, 2, 4")
db.commit()
print(f"{len(reports)} reports, {len(policies)} policies, {db.execute('SELECT COUNT(*) FROM failure_details').fetchone()[0]} failure rows")
