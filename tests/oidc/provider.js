#!/usr/bin/env node
// A real OpenID Provider for certgate's integration tests: panva's
// oidc-provider (OpenID Certified), served over HTTPS on loopback.
//
//   node tests/oidc/provider.js CONFIG.json [--exit-with-stdin]
//
// CONFIG.json (written by tests/integration/oidc_fixture.py):
//   host         address to listen on (default 127.0.0.1)
//   port         port to listen on; 0 (default) picks a free one
//   issuer_host  host name in the issuer URL (default: host), e.g. localhost
//   tls          {"cert": PEM file, "key": PEM file}: the HTTPS server certificate
//   jwks         {"keys": [private JWKs]}: the signing keys (published without
//                their private parts at jwks_uri); for each algorithm the first
//                key of that type signs
//   clients      oidc-provider client metadata objects
//   accounts     [{"login", "password", "claims": {...}}]: "sub" defaults to login
//   ttl          optional oidc-provider ttl overrides in seconds, e.g. {"IdToken": 60}
//
// Once listening it prints one line, "listening on ISSUER", on stdout.
// SIGTERM / SIGINT (or, with --exit-with-stdin, the end of stdin, i.e. the
// parent died) close the server and exit 0.
//
// Login and consent are this file's own small interactions (the library's
// devInteractions accept any password): GET /interaction/UID shows a login
// form (login, password) or a consent form (Continue / Deny); a wrong password
// is answered 401 with the login form again.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

const args = process.argv.slice(2);
const configPath = args.find((a) => !a.startsWith('--'));
if (!configPath) {
  process.stderr.write('usage: provider.js CONFIG.json [--exit-with-stdin]\n');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const host = config.host || '127.0.0.1';

const accounts = new Map((config.accounts || []).map((a) => [a.login, a]));

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${escape(title)}</title></head>
<body><h1>${escape(title)}</h1>
${body}
</body></html>
`;
}

function errorPage(text) {
  return page('Error', `<pre>${escape(text)}</pre>`);
}

function loginForm(uid, message, loginHint) {
  return page('Sign-in', `${message ? `<p class="error">${escape(message)}</p>\n` : ''}\
<form id="login" method="post" action="/interaction/${escape(uid)}/login">
<input type="text" name="login" value="${escape(loginHint || '')}" required>
<input type="password" name="password" required>
<button type="submit">Sign-in</button>
</form>`);
}

function consentForm(uid, client, details) {
  const scopes = (details.missingOIDCScope || []).join(' ');
  const claims = (details.missingOIDCClaims || []).join(' ');
  return page('Authorize', `<p>${escape(client.clientName || client.clientId)} asks for
scopes <code>${escape(scopes)}</code> and claims <code>${escape(claims)}</code>.</p>
<form id="consent" method="post" action="/interaction/${escape(uid)}/confirm">
<button type="submit">Continue</button>
</form>
<form id="deny" method="post" action="/interaction/${escape(uid)}/abort">
<button type="submit">Deny</button>
</form>`);
}

function sendHtml(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'cache-control': 'no-store',
  });
  res.end(html);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('form too large');
    chunks.push(chunk);
  }
  return querystring.parse(Buffer.concat(chunks).toString('utf8'));
}

// Storage for the provider's artifacts (sessions, interactions, grants,
// codes, tokens): a Map, for the life of the process. The library's own
// memory adapter is an LRU of 1000 entries, which a load test's hundreds of
// parallel logins would overflow; the library checks expiry itself.
const store = new Map();
const grantable = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest']);

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload) {
    const key = this.key(id);
    if (this.model === 'Session') store.set(`sessionUid:${payload.uid}`, id);
    if (grantable.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      store.set(grantKey, [...(store.get(grantKey) || []), key]);
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id);
    store.set(key, payload);
  }

  async find(id) {
    return store.get(this.key(id));
  }

  async findByUid(uid) {
    return this.find(store.get(`sessionUid:${uid}`));
  }

  async findByUserCode(userCode) {
    return this.find(store.get(`userCode:${userCode}`));
  }

  async consume(id) {
    const found = store.get(this.key(id));
    if (found) found.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) { // eslint-disable-line class-methods-use-this
    const grantKey = `grant:${grantId}`;
    for (const key of store.get(grantKey) || []) store.delete(key);
    store.delete(grantKey);
  }
}

// Lifetimes in seconds (config.ttl overrides any of them).
const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  DeviceCode: 600,
  Grant: 86400,
  IdToken: 3600,
  Interaction: 3600,
  Session: 86400,
  ...(config.ttl || {}),
};

const configuration = {
  adapter: MapAdapter,
  clients: config.clients || [],
  jwks: config.jwks,
  async findAccount(ctx, id) {
    const account = accounts.get(id);
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...(account.claims || {}) };
      },
    };
  },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  // the claims of the granted scopes go into the ID token itself (not only
  // to userinfo): certgate's issuer reads them from the ID token
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { methods: ['S256'], required: () => true },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  interactions: {
    url(ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: {
      enabled: true,
      async userCodeInputSource(ctx, form, out, err) {
        let message = 'Enter the code displayed on your device';
        if (err && (err.userCode || err.name === 'NoCodeError')) {
          message = 'The code you entered is incorrect';
        } else if (err && err.name === 'AbortedError') {
          message = 'The sign-in request was interrupted';
        } else if (err) {
          message = 'There was an error processing your request';
        }
        ctx.body = page('Device sign-in', `<p class="${err ? 'error' : 'info'}">${message}</p>
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p>${escape(client.clientName || client.clientId)}
shows the code <code>${escape(userCode)}</code>.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">Abort</button>`);
      },
      async successSource(ctx) {
        ctx.body = page('Sign-in success', '<p>You can close this page.</p>');
      },
    },
    revocation: { enabled: true },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre>${Object.entries(out)
      .map(([k, v]) => `${escape(k)}: ${escape(v)}`).join('\n')}</pre>`);
  },
  ttl,
};

const server = https.createServer({
  cert: readFileSync(config.tls.cert),
  key: readFileSync(config.tls.key),
});

let provider;
let handler;

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params, session } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      return sendHtml(res, 200, loginForm(uid, null, params.login_hint));
    }
    if (prompt.name === 'consent') {
      const client = await provider.Client.find(params.client_id);
      return sendHtml(res, 200, consentForm(uid, client, prompt.details));
    }
    return sendHtml(res, 501, errorPage(`unsupported prompt ${prompt.name}`));
  }
  if (req.method !== 'POST') return sendHtml(res, 405, errorPage('method not allowed'));
  const form = await readForm(req);
  switch (action) {
    case 'login': {
      if (prompt.name !== 'login') break;
      const account = accounts.get(form.login);
      if (!account || typeof form.password !== 'string' || account.password !== form.password) {
        return sendHtml(res, 401, loginForm(uid, 'Invalid login or password', form.login));
      }
      return provider.interactionFinished(req, res, { login: { accountId: account.login } },
        { mergeWithLastSubmission: false });
    }
    case 'confirm': {
      if (prompt.name !== 'consent') break;
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      if (missing.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: { grantId } },
        { mergeWithLastSubmission: true });
    }
    case 'abort':
      return provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User denied the request',
      }, { mergeWithLastSubmission: false });
    default:
  }
  return sendHtml(res, 400, errorPage(`unexpected ${action} at prompt ${prompt.name}`));
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/;

server.on('request', (req, res) => {
  res.on('finish', () => {
    process.stderr.write(`${req.method} ${req.url.split('?')[0]} ${res.statusCode}\n`);
  });
  const path = req.url.split('?')[0];
  const m = INTERACTION.exec(path);
  if (!provider) {
    sendHtml(res, 503, errorPage('starting'));
    return;
  }
  if (!m) {
    handler(req, res);
    return;
  }
  interaction(req, res, m[1], m[2]).catch((err) => {
    process.stderr.write(`interaction error: ${err.stack || err}\n`);
    if (!res.headersSent) {
      sendHtml(res, err.statusCode || 400, errorPage(`${err.name}: ${err.message}`));
    } else {
      res.end();
    }
  });
});

let stopping = false;
function stop(signal) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`stopping (${signal})\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
if (args.includes('--exit-with-stdin')) {
  process.stdin.on('end', () => stop('stdin closed'));
  process.stdin.on('error', () => stop('stdin error'));
  process.stdin.resume();
}

server.listen(config.port || 0, host, () => {
  const { port } = server.address();
  const issuerHost = config.issuer_host || host;
  const issuer = `https://${issuerHost.includes(':') ? `[${issuerHost}]` : issuerHost}:${port}`;
  provider = new Provider(issuer, configuration);
  handler = provider.callback();
  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`server_error: ${err.stack || err}\n`);
  });
  process.stdout.write(`listening on ${issuer}\n`);
});
