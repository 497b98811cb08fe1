#!/usr/bin/env node
// node-postgres (npm pg, pinned in package-lock.json) with the settings
// docs/clients.md gives: host = the address to connect to, ssl.servername =
// the name the certificate must carry (node-pg keeps it only when host is an
// IP address), ssl.ca/cert/key, and sslnegotiation 'direct' for direct TLS
// (node-pg then offers ALPN "postgresql" itself). Speaks the line protocol of
// tests/clients/README.md.
'use strict'

const fs = require('fs')
const readline = require('readline')
const pg = require('pg')

function config(c) {
  const cfg = {
    host: c.addr,
    port: Number(c.port),
    user: c.user,
    database: c.dbname,
    ssl: {
      ca: fs.readFileSync(c.rootcert),
      cert: fs.readFileSync(c.cert),
      key: fs.readFileSync(c.key),
      servername: c.host,
    },
    connectionTimeoutMillis: 10000,
  }
  if (c.direct === '1') cfg.sslnegotiation = 'direct'
  return cfg
}

const lines = []
const waiting = []
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (waiting.length) waiting.shift()(line)
  else lines.push(line)
})
rl.on('close', () => {
  while (waiting.length) waiting.shift()(null)
  lines.push(null)
})
function nextLine() {
  if (lines.length) return Promise.resolve(lines.shift())
  return new Promise((resolve) => waiting.push(resolve))
}

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function query(c, sql) {
  const client = new pg.Client(config(c))
  await client.connect()
  try {
    const res = await client.query({ text: sql, rowMode: 'array' })
    return res.rows
  } finally {
    await client.end()
  }
}

async function cancel(c, sql) {
  const client = new pg.Client(config(c))
  await client.connect()
  try {
    const q = new pg.Query({ text: sql, rowMode: 'array' })
    const done = new Promise((resolve, reject) => {
      q.on('end', resolve)
      q.on('error', reject)
    })
    client.query(q)
    reply({ running: true })
    const go = await nextLine()
    if (go !== 'go') throw new Error('expected go, got ' + go)
    // node-pg sends the CancelRequest in clear on a new connection (like
    // libpq before 17): the connection it opens needs no TLS settings
    new pg.Client({ host: c.addr, port: Number(c.port) }).cancel(client, q)
    await done
    return []
  } finally {
    await client.end()
  }
}

async function main() {
  for (;;) {
    const line = await nextLine()
    if (line === null) break
    if (!line.trim()) continue
    const c = Object.fromEntries(new URLSearchParams(line.trim()))
    try {
      let rows
      if (c.op === 'query') rows = await query(c, c.sql)
      else if (c.op === 'cancel') rows = await cancel(c, c.sql)
      else throw new Error('unknown op ' + c.op)
      reply({ ok: true, rows: rows.map((r) => r.map((v) => (v === null ? null : String(v)))) })
    } catch (err) {
      const db = err instanceof pg.DatabaseError
      reply({ ok: false, type: err.constructor.name, error: err.message,
              sqlstate: db ? err.code : null, severity: db ? err.severity : null,
              code: db ? null : err.code || null })
    }
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack) + '\n')
  process.exit(1)
})
