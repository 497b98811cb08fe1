#!/usr/bin/python3
"""asyncpg (Debian python3-asyncpg) with the settings docs/clients.md gives:
an ssl.SSLContext with the CA and the login certificate, the name to verify
fixed in the context (asyncpg checks the certificate against the host it
connects to and has no setting of its own for another name), and for
direct TLS (direct_tls=True) the ALPN protocol "postgresql". Speaks
lineproto.py's protocol."""

import asyncio
import os
import ssl
import sys

import asyncpg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lineproto  # noqa: E402


class NamedContext(ssl.SSLContext):
    """A client context that verifies (and sends as SNI) server_name, whatever
    address the connection goes to: asyncio hands the host it dialled to
    wrap_bio as server_hostname."""

    server_name = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None,
                 session=None):
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=self.server_name, session=session)


def ssl_context(c):
    ctx = NamedContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    ctx.server_name = c["host"]
    ctx.load_verify_locations(cafile=c["rootcert"])
    ctx.load_cert_chain(c["cert"], c["key"])
    if c.get("direct") == "1" and c.get("alpn", "1") == "1":
        ctx.set_alpn_protocols(["postgresql"])
    return ctx


async def connect(c):
    return await asyncpg.connect(host=c["addr"], port=int(c["port"]), user=c["user"],
                                 database=c["dbname"], ssl=ssl_context(c),
                                 direct_tls=c.get("direct") == "1", timeout=10)


async def aquery(c, sql):
    conn = await connect(c)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def query(c, sql):
    return [tuple(r.values()) for r in asyncio.run(aquery(c, sql))]


class Cancelled(Exception):
    """asyncpg cancels a running query when its task is cancelled: it sends a
    CancelRequest, and the task ends with CancelledError (the server's
    'canceling statement' error is not shown)."""


async def acancel(c, sql, ready):
    conn = await connect(c)
    try:
        task = asyncio.ensure_future(conn.fetch(sql))
        await asyncio.get_running_loop().run_in_executor(None, ready)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # the connection is usable again only once PostgreSQL ended the
            # query: a select 1 that answers proves the cancel got through
            after = await conn.fetchval("select 1", timeout=20)
            raise Cancelled("CancelledError; then select 1 returned %s" % after)
    finally:
        await conn.close()


def cancel(c, sql, ready):
    asyncio.run(acancel(c, sql, ready))


def describe(exc):
    return {"error": str(exc).strip(), "sqlstate": getattr(exc, "sqlstate", None),
            "asyncpg": asyncpg.__version__}


if __name__ == "__main__":
    lineproto.serve(sys.modules[__name__])
