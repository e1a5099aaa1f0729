"""Offers libtlsrpt-shaped datagrams to a unix datagram socket at a fixed rate, as Postfix does:
sendto with MSG_DONTWAIT, one try; EAGAIN (queue full) means the datagram is lost at the sender.
Usage: dgram_load.py SOCKET RATE SECONDS  → prints "sent=N eagain=M sessions=K" (K = sessions in the sent datagrams)"""
import errno, socket, sys, time

path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
A = ('{"dpv": "1","d": "d%d.example","pr": "v=TLSRPTv1; rua=mailto:tlsrpt@d%d.example","policies":[{"policy-type":2,"policy-domain": "d%d.example",'
     '"policy-string":["version: STSv1","mode: enforce","mx: mx.d%d.example","max_age: 604800"],"mx-host":["mx.d%d.example"],"failure-details":'
     '[{"c":205,"s": "192.0.2.1","n": "mx.d%d.example","h": "250-mx.d%d.example\\r\\n250 STARTTLS","r": "198.51.100.%d","f": "self-signed_certificate"}],"t":1,"f":1}]}')
B = '{"dpv": "1","d": "d%d.example","pr": "v=TLSRPTv1; rua=mailto:tlsrpt@d%d.example","policies":[{"policy-type":2,"policy-domain": "d%d.example","policy-string":["version: STSv1","mode: enforce","mx: mx.d%d.example","max_age: 604800"],"mx-host":["mx.d%d.example"],"t":0,"f":0}]}'
pool = []
for i in range(2000):
    d = i % 1000
    pool.append(((A % (d, d, d, d, d, d, d, i % 250)) if i % 10 == 0 else (B % (d, d, d, d, d))).encode())
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
sent = eagain = 0
start = time.monotonic()
total = int(rate * seconds)
tick = 0.001
i = 0
while i < total:
    due = min(total, int((time.monotonic() - start) * rate) + 1)
    while i < due:
        try:
            s.sendto(pool[i % len(pool)], socket.MSG_DONTWAIT, path)
            sent += 1
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                eagain += 1
            else:
                raise
        i += 1
    elapsed = time.monotonic() - start
    ahead = i / rate - elapsed
    if ahead > 0:
        time.sleep(min(ahead, tick))
elapsed = time.monotonic() - start
print(f"sent={sent} eagain={eagain} offered={total} seconds={elapsed:.2f} achieved_rate={total/elapsed:.0f}")
