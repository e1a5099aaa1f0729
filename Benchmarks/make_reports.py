"""Writes N distinct TLS reports, made from the interop JSON reports with a fresh report-id each:
as .json.gz bodies (for POST /tlsrpt) and as RFC 8460 §5.3 report mails in a Maildir (new/).
Usage: make_reports.py INTEROP_DIR OUT_DIR N"""
import glob, gzip, json, os, sys
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

interop, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sources = []
for path in sorted(glob.glob(f"{interop}/reports/**/*.json", recursive=True)):
    try:
        doc = json.load(open(path, encoding="utf-8"))
    except Exception:
        continue
    if isinstance(doc, dict) and "policies" in doc:
        sources.append(doc)
bodies = os.path.join(out, "bodies")
maildir = os.path.join(out, "Maildir")
for d in (bodies, f"{maildir}/new", f"{maildir}/cur", f"{maildir}/tmp"):
    os.makedirs(d, exist_ok=True)
for i in range(n):
    doc = dict(sources[i % len(sources)])
    doc["report-id"] = f"bench-{i}-{doc.get('report-id', '')}"
    doc["organization-name"] = doc.get("organization-name") or "Bench"
    data = gzip.compress(json.dumps(doc).encode(), 6)
    open(f"{bodies}/{i}.json.gz", "wb").write(data)
    domain = (doc["policies"][0].get("policy", {}).get("policy-domain") or "example.com")
    msg = MIMEMultipart("report")
    msg.set_param("report-type", "tlsrpt")
    msg["From"] = "tlsrpt@sender.example"
    msg["To"] = f"tlsrpt@{domain}"
    msg["Subject"] = f"Report Domain: {domain} Submitter: sender.example Report-ID: <{doc['report-id']}>"
    msg["Message-ID"] = f"<{i}@sender.example>"
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = "sender.example"
    msg.attach(MIMEText("This is an aggregate TLS report from sender.example"))
    part = MIMEApplication(data, "tlsrpt+gzip")
    part.add_header("Content-Disposition", "attachment", filename=f"sender.example!{domain}!0!86399!{i}.json.gz")
    msg.attach(part)
    open(f"{maildir}/new/{1700000000 + i}.M{i}P1.bench", "wb").write(msg.as_bytes())
print(f"{n} reports from {len(sources)} interop reports")
