#!/usr/bin/python3
"""psycopg2 (Debian python3-psycopg2) with the settings docs/clients.md
gives: libpq's own parameters, host = the name the certificate carries,
hostaddr = the address to connect to. Speaks lineproto.py's protocol."""

import os
import sys
import threading

import psycopg2
import psycopg2.extensions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lineproto  # noqa: E402


def connect(c):
    conn = psycopg2.connect(
        host=c["host"], hostaddr=c["addr"], port=c["port"], user=c["user"],
        dbname=c["dbname"], sslmode="verify-full", sslrootcert=c["rootcert"],
        sslcert=c["cert"], sslkey=c["key"], connect_timeout=10)
    conn.autocommit = True
    return conn


def query(c, sql):
    conn = connect(c)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def cancel(c, sql, ready):
    conn = connect(c)
    failure = []

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
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
    return {"error": str(exc).strip(), "sqlstate": getattr(exc, "pgcode", None),
            "libpq": psycopg2.extensions.libpq_version()}


if __name__ == "__main__":
    lineproto.serve(sys.modules[__name__])
