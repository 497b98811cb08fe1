"""The line protocol the client programs under tests/clients speak, for the
Python ones (README.md beside this file describes it).

One command per line on stdin, an URL query string: op=query|cancel plus
the connection's parameters (host: the name the certificate must carry,
addr: the address to connect to, port, user, dbname, rootcert, cert, key,
pk8, direct=1 for direct TLS) and sql. One JSON object per line on stdout:
{"ok": true, "rows": [[...]]} or {"ok": false, "error": "...", "sqlstate":
...}; a cancel first says {"running": true} once its query is sent, waits
for a line "go" and then cancels it."""

import json
import sys
import urllib.parse


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def ready():
    """Tells the test the query is on its way; returns when it says go."""
    reply({"running": True})
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise RuntimeError("expected go, got %r" % line)


def serve(client):
    """client: query(conn, sql) -> rows; cancel(conn, sql, ready) -> raises
    what the client reports for the cancelled query; describe(exc) -> dict."""
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = dict(urllib.parse.parse_qsl(line.strip(), keep_blank_values=True))
        op = cmd.pop("op")
        sql = cmd.pop("sql")
        try:
            if op == "query":
                rows = client.query(cmd, sql)
                reply({"ok": True, "rows": [[None if v is None else str(v) for v in r]
                                            for r in rows]})
            elif op == "cancel":
                client.cancel(cmd, sql, ready)
                reply({"ok": True, "rows": []})
            else:
                raise ValueError("unknown op " + op)
        except Exception as exc:  # what the client reports is the result
            out = {"ok": False, "type": type(exc).__name__}
            out.update(client.describe(exc))
            reply(out)
