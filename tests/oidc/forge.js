#!/usr/bin/env node
// Keys and forged JWTs for certgate's hostile-token tests, with `jose` (the
// library oidc-provider itself signs with). JSON in on stdin, JSON out on stdout.
//
//   node tests/oidc/forge.js keygen < [{"kty": "RSA"|"EC"|"OKP", "kid": ..., "alg": ...}, ...]
//     -> [{"jwk": private JWK (with kid, alg, use "sig"), "public_pem": SPKI PEM}, ...]
//        RSA keys are 2048-bit ("bits" to change), EC keys P-256 ("crv"), OKP
//        keys Ed25519; alg defaults to RS256 / ES256 / EdDSA.
//
//   node tests/oidc/forge.js public-pem < JWK  -> "SPKI PEM of its public key"
//
//   node tests/oidc/forge.js sign < [request, ...]  -> ["token", ...]
//     request: {
//       "header": {...}            the protected header, as is (alg and kid included)
//       "payload_b64": "..."       the payload's exact bytes, base64
//       then one of:
//       "key": JWK                 sign with this (private) JWK, algorithm header.alg
//       "hmac_secret": "text"      HS256/384/512 with these UTF-8 bytes as the secret
//                                  (e.g. the IdP's public key PEM: key confusion)
//       nothing                    no signature at all (for alg "none"): HEADER.PAYLOAD.
//       and optionally:
//       "signature_b64url": "..."  with no key: this text as the signature part
//       "tamper_payload_b64": "..."  after signing, replace the payload part with these
//                                  bytes (a valid signature over another payload)
//     }
// A single object instead of a list gives a single result.
//
//   node tests/oidc/forge.js serve
//     the same as a co-process: one {"mode": "keygen"|"sign"|"public-pem",
//     "input": ...} per line on stdin, one {"result": ...} or {"error": ...}
//     per line on stdout, until stdin ends.

import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { createInterface } from 'node:readline';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

function keygen(spec) {
  const kty = spec.kty || 'RSA';
  let pair;
  let alg;
  if (kty === 'RSA') {
    pair = generateKeyPairSync('rsa', { modulusLength: spec.bits || 2048 });
    alg = spec.alg || 'RS256';
  } else if (kty === 'EC') {
    pair = generateKeyPairSync('ec', { namedCurve: spec.crv || 'P-256' });
    alg = spec.alg || 'ES256';
  } else if (kty === 'OKP') {
    pair = generateKeyPairSync('ed25519');
    alg = spec.alg || 'EdDSA';
  } else {
    throw new Error(`keygen: unsupported kty ${kty}`);
  }
  const jwk = { ...pair.privateKey.export({ format: 'jwk' }), kid: spec.kid, alg, use: 'sig' };
  if (!spec.kid) delete jwk.kid;
  return {
    jwk,
    public_pem: pair.publicKey.export({ type: 'spki', format: 'pem' }),
  };
}

async function sign(req) {
  const { CompactSign, importJWK } = await import('jose');
  const header = req.header || {};
  const payload = Buffer.from(req.payload_b64 || '', 'base64');
  let token;
  if (req.key || req.hmac_secret !== undefined) {
    if (typeof header.alg !== 'string') throw new Error('sign: header.alg needed to sign');
    const key = req.key
      ? await importJWK(req.key, header.alg)
      : new TextEncoder().encode(req.hmac_secret);
    token = await new CompactSign(payload).setProtectedHeader(header).sign(key);
  } else {
    token = `${b64url(JSON.stringify(header))}.${b64url(payload)}.${req.signature_b64url || ''}`;
  }
  if (req.tamper_payload_b64 !== undefined) {
    const [h, , s] = token.split('.');
    token = `${h}.${b64url(Buffer.from(req.tamper_payload_b64, 'base64'))}.${s}`;
  }
  return token;
}

function publicPem(jwk) {
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
}

async function run(mode, input) {
  const many = Array.isArray(input);
  const items = many ? input : [input];
  const out = [];
  for (const item of items) {
    if (mode === 'keygen') out.push(keygen(item));
    else if (mode === 'sign') out.push(await sign(item));
    else if (mode === 'public-pem') out.push(publicPem(item));
    else throw new Error(`unknown mode ${mode}`);
  }
  return many ? out : out[0];
}

// serve: one JSON request per line on stdin, {"mode": ..., "input": ...};
// one JSON answer per line on stdout, {"result": ...} or {"error": "..."}.
// Ends with stdin. Spares a node start per token.
async function serve() {
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let answer;
    try {
      const { mode, input } = JSON.parse(line);
      answer = { result: await run(mode, input) };
    } catch (err) {
      answer = { error: String(err.stack || err) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
}

async function main() {
  const mode = process.argv[2];
  if (mode === 'serve') {
    await serve();
    return;
  }
  if (!['keygen', 'sign', 'public-pem'].includes(mode)) {
    process.stderr.write('usage: forge.js keygen|sign|public-pem < JSON, or forge.js serve\n');
    process.exit(2);
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const out = await run(mode, JSON.parse(Buffer.concat(chunks).toString('utf8')));
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err) => {
  process.stderr.write(`forge.js: ${err.stack || err}\n`);
  process.exit(1);
});
