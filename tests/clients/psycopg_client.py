#!/usr/bin/python3
"""psycopg 3 (Debian python3-psycopg) with the settings docs/clients.md
gives: libpq's parameters, as for psycopg2 and psql. Speaks lineproto.py's
protocol."""

import os
import sys
import threading

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lineproto  # noqa: E402


def connect(c):
    return psycopg.connect(
        host=c["host"], hostaddr=c["addr"], port=c["port"], user=c["user"],
        dbname=c["dbname"], sslmode="verify-full", sslrootcert=c["rootcert"],
        sslcert=c["cert"], sslkey=c["key"], connect_timeout=10, autocommit=True)


def query(c, sql):
    with connect(c) as conn:
        return conn.execute(sql).fetchall()


def cancel(c, sql, ready):
    conn = connect(c)
    failure = []

    def run():
        try:
            conn.execute(sql)
        except Exception as exc:
            failure.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        ready()
        conn.cancel()  # libpq's PQcancel: a CancelRequest on a new connection
    finally:
        worker.join(60)
        conn.close()
    if failure:
        raise failure[0]


def describe(exc):
    return {"error": str(exc).strip(), "sqlstate": getattr(exc, "sqlstate", None),
            "libpq": psycopg.pq.version()}


if __name__ == "__main__":
    lineproto.serve(sys.modules[__name__])
