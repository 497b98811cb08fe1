#!/usr/bin/env python3
"""Writes certgate's path-validation corpus (tests/pathval/README.md) into a
folder, one subfolder per case:

    tests/pathval/make_corpus.py OUT [--now EPOCH] [--at-lead SECONDS]

Each case folder holds
    case.json        the case: name, description, rfc, expect, reason, ...
    anchors.pem      the trust anchor(s): what goes into gateway.client_ca
    crl-*.pem        the CRLs, one file each (gateway.crl gets them concatenated)
    chain.pem        what the client sends: the leaf, then the intermediates
    leaf.key         the leaf's private key (for live handshakes)
    certs/*.pem      every certificate alone (root, int1, int2, leaf, ...)
and OUT/index.json lists the case names in order.

Certificates and CRLs are encoded here, byte by byte, with a small DER
writer: the defects the corpus needs (serial zero, a 21-octet serial, an
empty subject, a malformed AIA, an rfc822Name with two '@') are ones a
certificate tool refuses to make. Keys are ECDSA P-256 and every signature
is ecdsa-with-SHA256, both made by the openssl command (genpkey, dgst
-sign): no Python package beyond the standard library. Nothing here is
committed: certgate's tests generate the corpus at run time, keys included,
in a temporary folder.

Times are relative to --now (default: the current second). A case with an
"at" key is to be judged at that epoch second instead of the wall clock
(certgate explain --at); those cases put their leaf's notAfter --at-lead
seconds (default 5) after --now."""

import argparse
import base64
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

HOUR = 3600
DAY = 86400
YEAR = 365 * DAY

# ---- DER ---------------------------------------------------------------------------


def _len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, content):
    return bytes([tag]) + _len(len(content)) + content


def seq(*items):
    return tlv(0x30, b"".join(items))


def set_of(*items):
    return tlv(0x31, b"".join(sorted(items)))  # DER: SET OF sorted


def integer(n):
    """Two's complement, minimal: any sign, any size (serial zero, negative,
    21 octets)."""
    if n >= 0:
        body = n.to_bytes((n.bit_length() + 8) // 8, "big")
    else:
        body = n.to_bytes(((-n - 1).bit_length() + 8) // 8, "big", signed=True)
    return tlv(0x02, body)


def boolean(v):
    return tlv(0x01, b"\xff" if v else b"\x00")


def null():
    return tlv(0x05, b"")


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray()
    for i, v in enumerate([parts[0] * 40 + parts[1]] + parts[2:]):
        chunk = [v & 0x7F]
        v >>= 7
        while v:
            chunk.append(0x80 | (v & 0x7F))
            v >>= 7
        body += bytes(reversed(chunk))
    return tlv(0x06, bytes(body))


def octets(b):
    return tlv(0x04, b)


def bits(b, unused=0):
    return tlv(0x03, bytes([unused]) + b)


def utf8(s):
    return tlv(0x0C, s.encode("utf-8"))


def ia5(s):
    return tlv(0x16, s.encode("ascii"))


def explicit(n, content):
    return tlv(0xA0 | n, content)


def der_time(epoch):
    t = time.gmtime(epoch)
    if 1950 <= t.tm_year < 2050:
        return tlv(0x17, time.strftime("%y%m%d%H%M%SZ", t).encode())
    return tlv(0x18, time.strftime("%Y%m%d%H%M%SZ", t).encode())


def read_tlv(data, pos=0):
    """(tag, content, next position) of the TLV at pos."""
    tag = data[pos]
    n = data[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(data[pos:pos + k], "big")
        pos += k
    return tag, data[pos:pos + n], pos + n


ATTRS = {"CN": "2.5.4.3", "O": "2.5.4.10", "OU": "2.5.4.11"}


def name(*pairs):
    """A Name: ("CN", "x"), ... each in its own RDN; no pairs: the empty name."""
    return seq(*[set_of(seq(oid(ATTRS[k]), utf8(v))) for k, v in pairs])


def pem(kind, der):
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)


ECDSA_SHA256 = seq(oid("1.2.840.10045.4.3.2"))

# ---- extensions --------------------------------------------------------------------

OID_BC = "2.5.29.19"
OID_KU = "2.5.29.15"
OID_EKU = "2.5.29.37"
OID_SKI = "2.5.29.14"
OID_AKI = "2.5.29.35"
OID_SAN = "2.5.29.17"
OID_NC = "2.5.29.30"
OID_AIA = "1.3.6.1.5.5.7.1.1"
OID_CERT_POLICIES = "2.5.29.32"
OID_CRL_NUMBER = "2.5.29.20"
CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
SERVER_AUTH = "1.3.6.1.5.5.7.3.1"
UNKNOWN_EXT = "1.3.6.1.4.1.55738.666.1"  # a private arc: no verifier knows it

KU = {"digitalSignature": 0, "nonRepudiation": 1, "keyEncipherment": 2,
      "dataEncipherment": 3, "keyAgreement": 4, "keyCertSign": 5, "cRLSign": 6}


def ext(oid_, value, critical=False):
    return (oid_, critical, value)


def ext_der(e):
    oid_, critical, value = e
    parts = [oid(oid_)]
    if critical:  # DEFAULT FALSE: absent when false (DER)
        parts.append(boolean(True))
    parts.append(octets(value))
    return seq(*parts)


def bc(ca, critical=True, pathlen=None):
    parts = []
    if ca:  # cA DEFAULT FALSE
        parts.append(boolean(True))
    if pathlen is not None:
        parts.append(integer(pathlen))
    return ext(OID_BC, seq(*parts), critical)


def ku(*names, critical=True):
    """keyUsage as a named BIT STRING: trailing zero bits dropped (DER)."""
    v = 0
    for n in names:
        v |= 1 << KU[n]
    top = max(KU[n] for n in names)
    nbytes = top // 8 + 1
    b = bytearray(nbytes)
    for i in range(top + 1):
        if v >> i & 1:
            b[i // 8] |= 0x80 >> (i % 8)
    return ext(OID_KU, bits(bytes(b), 7 - top % 8), critical)


def eku(*oids, critical=False):
    return ext(OID_EKU, seq(*[oid(o) for o in oids]), critical)


def ski(keyid):
    return ext(OID_SKI, octets(keyid))


def aki(keyid):
    return ext(OID_AKI, seq(tlv(0x80, keyid)))


def general_name(kind, value):
    tag = {"email": 0x81, "dns": 0x82, "uri": 0x86}[kind]
    return tlv(tag, value.encode("ascii"))


def san(*names, critical=False):
    """names: ("email", "alice@example.com"), ("dns", "..."), ("uri", "...")"""
    return ext(OID_SAN, seq(*[general_name(k, v) for k, v in names]), critical)


def name_constraints(permitted, critical=True):
    subtrees = b"".join(seq(general_name(k, v)) for k, v in permitted)
    return ext(OID_NC, seq(tlv(0xA0, subtrees)), critical)


def aia_ca_issuers(url):
    return ext(OID_AIA, seq(seq(oid("1.3.6.1.5.5.7.48.2"), general_name("uri", url))))


def unknown_critical():
    return ext(UNKNOWN_EXT, null(), critical=True)


# ---- keys and signatures (the openssl command) -------------------------------------

class Key:
    def __init__(self, folder, label):
        self.path = os.path.join(folder, label + ".key")
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", self.path])
        self.spki = run(["openssl", "pkey", "-in", self.path, "-pubout", "-outform", "DER"])
        # keyIdentifier: SHA-1 of the subjectPublicKey BIT STRING's value
        # (RFC 5280 4.2.1.2, method 1)
        _, body, _ = read_tlv(self.spki)
        _, _, nxt = read_tlv(body)
        _, pub, _ = read_tlv(body, nxt)
        self.keyid = hashlib.sha1(pub[1:]).digest()

    def sign(self, tbs):
        return run(["openssl", "dgst", "-sha256", "-sign", self.path], stdin=tbs)


def run(args, stdin=None):
    proc = subprocess.run(args, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(args), proc.stderr.decode(errors="replace")))
    return proc.stdout


def signed(tbs, key):
    return seq(tbs, ECDSA_SHA256, bits(key.sign(tbs)))


# ---- certificates ------------------------------------------------------------------

class Cert:
    def __init__(self, role, cn, subject, key, der):
        self.role = role      # file name: root, int1, leaf, ...
        self.cn = cn          # subject CN (None: empty subject)
        self.subject = subject  # DER Name
        self.key = key
        self.der = der

    @property
    def pem(self):
        return pem("CERTIFICATE", self.der)


def random_serial():
    """16 octets, positive, the first octet non-zero: like a real CA's."""
    return int.from_bytes(b"\x40" + secrets.token_bytes(15), "big")


class Case:
    def __init__(self, corpus, name, description, rfc, expect, reason=None,
                 detail_contains=None, crl_check="chain", verify_depth=None, at=None,
                 live=False, note=None):
        assert expect in ("accept", "refuse")
        assert (reason is None) == (expect == "accept"), name
        assert crl_check in ("leaf", "chain", "all")
        self.corpus = corpus
        self.now = corpus.now
        self.meta = {"name": name, "description": description, "rfc": rfc, "expect": expect,
                     "reason": reason, "crl_check": crl_check}
        if detail_contains is not None:
            self.meta["detail_contains"] = detail_contains
        if verify_depth is not None:
            self.meta["verify_depth"] = verify_depth
        if at is not None:
            self.meta["at"] = at
        if live:
            self.meta["live"] = True
        if note:
            self.meta["note"] = note
        self.name = name
        self.certs = []
        self.crls = []

    def cn(self, role):
        return "%s %s" % (self.name, role)

    def issue(self, role, issuer=None, key=None, ca=False, cn=None, subject=None, serial=None,
              not_before=None, not_after=None, issuer_name=None, **overrides):
        """A certificate. issuer None: self-signed. Extensions are the usual
        ones of a root, an intermediate (ca=True) or a login leaf; overrides
        replace one by name (bc, ku, eku, ski, aki, san; None drops it), and
        extra=[...] appends more."""
        key = key or self.corpus.key(role)
        cn = cn if cn is not None else self.cn(role)
        if subject is None:
            subject = name(("CN", cn)) if cn else name()
        iss_subject = issuer_name if issuer_name is not None else \
            (issuer.subject if issuer else subject)
        iss_key = issuer.key if issuer else key
        now = self.now
        if ca:
            nb = now - DAY if not_before is None else not_before
            na = now + (10 if issuer is None else 5) * YEAR if not_after is None else not_after
            exts = {"bc": bc(True), "ku": ku("keyCertSign", "cRLSign"), "ski": ski(key.keyid),
                    "aki": aki(iss_key.keyid) if issuer else None}
        else:
            nb = now - HOUR if not_before is None else not_before
            na = now + 12 * HOUR if not_after is None else not_after
            exts = {"bc": bc(False), "ku": ku("digitalSignature"), "eku": eku(CLIENT_AUTH),
                    "ski": ski(key.keyid), "aki": aki(iss_key.keyid),
                    "san": san(("email", "alice@example.com"))}
        extra = overrides.pop("extra", [])
        for k, v in overrides.items():
            assert k in ("bc", "ku", "eku", "ski", "aki", "san"), k
            exts[k] = v
        ext_list = [e for e in exts.values() if e is not None] + list(extra)
        tbs = seq(explicit(0, integer(2)),
                  integer(random_serial() if serial is None else serial),
                  ECDSA_SHA256, iss_subject, seq(der_time(nb), der_time(na)), subject, key.spki,
                  explicit(3, seq(*[ext_der(e) for e in ext_list])))
        c = Cert(role, cn or None, subject, key, signed(tbs, iss_key))
        self.certs.append(c)
        return c

    def root(self, role="root", **kw):
        return self.issue(role, ca=True, **kw)

    def crl(self, issuer, revoked=(), this_update=None, next_update=None):
        """A v2 CRL from issuer listing the certificates in revoked."""
        tu = self.now - HOUR if this_update is None else this_update
        nu = self.now + 7 * DAY if next_update is None else next_update
        entries = [seq(integer(serial_of(c)), der_time(tu)) for c in revoked]
        parts = [integer(1), ECDSA_SHA256, issuer.subject, der_time(tu), der_time(nu)]
        if entries:
            parts.append(seq(*entries))
        parts.append(explicit(0, seq(ext_der(aki(issuer.key.keyid)),
                                     ext_der(ext(OID_CRL_NUMBER, integer(1))))))
        der = signed(seq(*parts), issuer.key)
        self.crls.append((issuer.role, der))
        return der

    def write(self, chain, anchors):
        """chain: the leaf, then what the client sends after it."""
        folder = os.path.join(self.corpus.out, self.name)
        os.makedirs(os.path.join(folder, "certs"))
        for c in self.certs:
            with open(os.path.join(folder, "certs", c.role + ".pem"), "w") as f:
                f.write(c.pem)
        with open(os.path.join(folder, "anchors.pem"), "w") as f:
            f.write("".join(c.pem for c in anchors))
        with open(os.path.join(folder, "chain.pem"), "w") as f:
            f.write("".join(c.pem for c in chain))
        shutil.copyfile(chain[0].key.path, os.path.join(folder, "leaf.key"))
        os.chmod(os.path.join(folder, "leaf.key"), 0o600)
        crl_files = []
        for role, der in self.crls:
            fname = "crl-%s.pem" % role
            with open(os.path.join(folder, fname), "w") as f:
                f.write(pem("X509 CRL", der))
            crl_files.append(fname)
        meta = dict(self.meta)
        meta.update({
            "anchors": "anchors.pem",
            "chain": "chain.pem",
            "key": "leaf.key",
            "crls": crl_files,
            "leaf": "certs/%s.pem" % chain[0].role,
            "intermediates": ["certs/%s.pem" % c.role for c in chain[1:]],
        })
        with open(os.path.join(folder, "case.json"), "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        self.corpus.names.append(self.name)


def serial_of(cert):
    _, tbs_outer, _ = read_tlv(cert.der)
    _, tbs, _ = read_tlv(tbs_outer)
    _, _, pos = read_tlv(tbs)  # [0] version
    _, serial, _ = read_tlv(tbs, pos)
    return int.from_bytes(serial, "big", signed=True)


class Corpus:
    def __init__(self, out, now, keydir, at_lead=5):
        self.out = out
        self.now = now
        self.at_lead = at_lead
        self.keydir = keydir
        self.keys = {}
        self.names = []

    def key(self, label):
        """One key per role (root, int1, leaf, ...), shared by the cases: each
        case is verified alone, so only keys within a case must differ."""
        if label not in self.keys:
            self.keys[label] = Key(self.keydir, label)
        return self.keys[label]

    def case(self, *args, **kw):
        return Case(self, *args, **kw)


# ---- the cases ---------------------------------------------------------------------

def simple(c, **leaf):
    """root -> int1 -> leaf; returns (root, int1, leaf)."""
    root = c.root()
    int1 = c.issue("int1", root, ca=True)
    lf = c.issue("leaf", int1, **leaf)
    return root, int1, lf


def build(corpus):
    now = corpus.now
    # Each entry: a function that makes one case. Kept in the README's order.
    cases = []

    def case(fn):
        cases.append(fn)
        return fn

    # -- valid chains, and verify_depth -------------------------------------------

    @case
    def _():
        c = corpus.case("valid-root-leaf", "A leaf issued by the root directly.",
                        "5280 6.1", "accept")
        root = c.root()
        lf = c.issue("leaf", root)
        c.write([lf], [root])

    @case
    def _():
        c = corpus.case("valid-root-int-leaf",
                        "root -> intermediate -> leaf, the intermediate sent by the client.",
                        "5280 6.1", "accept", live=True)
        root, int1, lf = simple(c)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("valid-two-intermediates",
                        "root -> int1 -> int2 -> leaf with the default verify_depth: the "
                        "default must fit a root and two intermediates.",
                        "5280 6.1; issue 12 verify_depth", "accept")
        root = c.root()
        int1 = c.issue("int1", root, ca=True)
        int2 = c.issue("int2", int1, ca=True)
        lf = c.issue("leaf", int2)
        c.write([lf, int2, int1], [root])

    @case
    def _():
        c = corpus.case("depth-2-two-intermediates",
                        "verify_depth 2 with two intermediates: verify_depth counts the "
                        "intermediates (not the leaf, not the trust anchor), as OpenSSL does.",
                        "issue 12 verify_depth", "accept", verify_depth=2)
        root = c.root()
        int1 = c.issue("int1", root, ca=True)
        int2 = c.issue("int2", int1, ca=True)
        lf = c.issue("leaf", int2)
        c.write([lf, int2, int1], [root])

    @case
    def _():
        c = corpus.case("depth-1-two-intermediates",
                        "verify_depth 1 with two intermediates: one too many.",
                        "issue 12 verify_depth", "refuse", "certificate chain too long",
                        verify_depth=1)
        root = c.root()
        int1 = c.issue("int1", root, ca=True)
        int2 = c.issue("int2", int1, ca=True)
        lf = c.issue("leaf", int2)
        c.write([lf, int2, int1], [root])

    # -- revocation -----------------------------------------------------------------

    @case
    def _():
        c = corpus.case("revoked-leaf", "A leaf listed in its issuer's (the root's) CRL.",
                        "5280 6.3", "refuse", "certificate revoked",
                        detail_contains="revoked-leaf leaf", live=True)
        root = c.root()
        lf = c.issue("leaf", root)
        c.crl(root, revoked=[lf])
        c.write([lf], [root])

    @case
    def _():
        c = corpus.case("revoked-intermediate",
                        "The root's CRL lists the intermediate; the intermediate's own CRL is "
                        "empty. crl_check chain (the default) checks every certificate whose "
                        "issuer has a CRL.",
                        "5280 6.1.3(a)(3)", "refuse", "certificate revoked",
                        detail_contains="revoked-intermediate int1", live=True)
        root, int1, lf = simple(c)
        c.crl(root, revoked=[int1])
        c.crl(int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("revoked-intermediate-only-root-crl",
                        "The root's CRL lists the intermediate; there is no CRL from the "
                        "intermediate. crl_check chain: the revoked intermediate is the "
                        "refusal (the leaf's issuer has no CRL, so the leaf is not checked).",
                        "5280 6.1.3(a)(3)", "refuse", "certificate revoked",
                        detail_contains="revoked-intermediate-only-root-crl int1")
        root, int1, lf = simple(c)
        c.crl(root, revoked=[int1])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-chain-leaf-issuer-without-crl",
                        "crl_check chain (the default) with a CRL from the root only (the "
                        "intermediate not revoked) and none from the intermediate: chain "
                        "checks where a CRL is present, so this is accepted. (Today the "
                        "leaf's issuer must have a CRL whenever gateway.crl is set.)",
                        "CONFIG.md gateway.crl_check", "accept")
        root, int1, lf = simple(c)
        c.crl(root)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-leaf-revoked-intermediate",
                        "crl_check leaf: only the leaf is checked, so a revoked intermediate "
                        "goes through (today's behaviour, made explicit).",
                        "CONFIG.md gateway.crl_check", "accept", crl_check="leaf", live=True)
        root, int1, lf = simple(c)
        c.crl(root, revoked=[int1])
        c.crl(int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-leaf-issuer-without-crl",
                        "crl_check leaf with no CRL from the leaf's issuer: refused, as "
                        "today whenever gateway.crl is set.",
                        "CONFIG.md gateway.crl_check", "refuse", "crl unavailable for this ca",
                        crl_check="leaf")
        root, int1, lf = simple(c)
        c.crl(root)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-all-complete",
                        "crl_check all with a CRL from every CA of the path, nothing revoked.",
                        "CONFIG.md gateway.crl_check", "accept", crl_check="all")
        root, int1, lf = simple(c)
        c.crl(root)
        c.crl(int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-all-missing-root-crl",
                        "crl_check all: a CRL from the intermediate (for the leaf) but none "
                        "from the root (for the intermediate).",
                        "CONFIG.md gateway.crl_check", "refuse", "crl unavailable for this ca",
                        crl_check="all")
        root, int1, lf = simple(c)
        c.crl(int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-all-missing-intermediate-crl",
                        "crl_check all: a CRL from the root (for the intermediate) but none "
                        "from the intermediate (for the leaf).",
                        "CONFIG.md gateway.crl_check", "refuse", "crl unavailable for this ca",
                        crl_check="all")
        root, int1, lf = simple(c)
        c.crl(root)
        c.write([lf, int1], [root])

    # -- RFC 5280 structure ----------------------------------------------------------

    @case
    def _():
        c = corpus.case("ca-without-ski",
                        "An intermediate CA without subjectKeyIdentifier.",
                        "5280 4.2.1.2", "refuse",
                        "certificate malformed: ca without subject key identifier")
        # the leaf's AKI keyid still names the intermediate's key (method 1
        # needs no SKI to compute it)
        root = c.root()
        int1 = c.issue("int1", root, ca=True, ski=None)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("ca-basic-constraints-not-critical",
                        "An intermediate CA whose basicConstraints (cA TRUE) is not critical.",
                        "5280 4.2.1.9", "refuse",
                        "certificate malformed: basic constraints not critical", live=True)
        root = c.root()
        int1 = c.issue("int1", root, ca=True, bc=bc(True, critical=False))
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("intermediate-without-aki",
                        "An intermediate without authorityKeyIdentifier.",
                        "5280 4.2.1.1", "refuse",
                        "certificate malformed: missing authority key identifier")
        root = c.root()
        int1 = c.issue("int1", root, ca=True, aki=None)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("leaf-without-aki", "A leaf without authorityKeyIdentifier.",
                        "5280 4.2.1.1", "refuse",
                        "certificate malformed: missing authority key identifier")
        root, int1, lf = simple(c, aki=None)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("leaf-asserts-keycertsign",
                        "A leaf (basicConstraints cA FALSE) whose keyUsage asserts "
                        "keyCertSign.",
                        "5280 4.2.1.3", "refuse",
                        "certificate malformed: leaf asserts keyCertSign",
                        live=True)
        root, int1, lf = simple(c, ku=ku("digitalSignature", "keyCertSign"))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("empty-subject-san-not-critical",
                        "A leaf with an empty subject whose subjectAltName is not critical.",
                        "5280 4.1.2.6, 4.2.1.6", "refuse",
                        "certificate malformed: empty subject with non-critical "
                        "subjectAltName")
        root, int1, lf = simple(c, cn="")
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("empty-subject-san-critical",
                        "A leaf with an empty subject and a critical subjectAltName: legal.",
                        "5280 4.1.2.6, 4.2.1.6", "accept")
        root, int1, lf = simple(c, cn="",
                                san=san(("email", "alice@example.com"), critical=True))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("serial-zero", "A leaf whose serial number is 0.",
                        "5280 4.1.2.2", "refuse", "certificate malformed: serial number zero",
                        live=True)
        root, int1, lf = simple(c, serial=0)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("serial-negative", "A leaf whose serial number is negative (-1234).",
                        "5280 4.1.2.2", "refuse",
                        "certificate malformed: serial number negative")
        root, int1, lf = simple(c, serial=-1234)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("serial-21-octets",
                        "A leaf whose serial number takes 21 octets (0x01 then 20 more).",
                        "5280 4.1.2.2", "refuse",
                        "certificate malformed: serial number longer than 20 octets")
        root, int1, lf = simple(c, serial=int.from_bytes(b"\x01" + b"\x5a" * 20, "big"))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("serial-20-octets",
                        "A leaf whose serial number takes exactly 20 octets: the limit, legal.",
                        "5280 4.1.2.2", "accept")
        root, int1, lf = simple(c, serial=int.from_bytes(b"\x7f" + b"\xa5" * 19, "big"))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("serial-zero-intermediate",
                        "An intermediate whose serial number is 0: the rule holds for every "
                        "certificate of the path, and the detail says which.",
                        "5280 4.1.2.2", "refuse", "certificate malformed: serial number zero",
                        detail_contains="serial-zero-intermediate int1")
        root = c.root()
        int1 = c.issue("int1", root, ca=True, serial=0)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("anchor-serial-zero",
                        "The trust anchor itself has serial number 0: it is configuration "
                        "(gateway.client_ca), not part of the path RFC 5280 6.1 validates; some "
                        "long-lived roots do.",
                        "5280 6.1.1(d)", "accept")
        root = c.root(serial=0)
        int1 = c.issue("int1", root, ca=True)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("unknown-critical-extension-leaf",
                        "A leaf with a critical extension no verifier knows.",
                        "5280 4.2", "refuse", "unhandled critical extension", live=True)
        root, int1, lf = simple(c, extra=[unknown_critical()])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("unknown-critical-extension-intermediate",
                        "An intermediate with a critical extension no verifier knows.",
                        "5280 4.2", "refuse", "unhandled critical extension", live=True)
        root = c.root()
        int1 = c.issue("int1", root, ca=True, extra=[unknown_critical()])
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("aia-malformed",
                        "A leaf whose authorityInfoAccess value is a bare UTF8String URL "
                        "instead of a SEQUENCE OF AccessDescription.",
                        "5280 4.2.2.1", "refuse",
                        "certificate malformed: invalid authority information access")
        root, int1, lf = simple(c, extra=[ext(OID_AIA, utf8("http://ca.example/int1.crt"))])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("aia-well-formed",
                        "A leaf with a well-formed authorityInfoAccess (caIssuers URI): legal.",
                        "5280 4.2.2.1", "accept")
        root, int1, lf = simple(c, extra=[aia_ca_issuers("http://ca.example/int1.crt")])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("undecodable-extension",
                        "A leaf whose (non-critical) certificatePolicies value is a UTF8String "
                        "instead of a SEQUENCE OF PolicyInformation.",
                        "5280 4.2.1.4", "refuse", "certificate malformed: invalid extension")
        root, int1, lf = simple(c, extra=[ext(OID_CERT_POLICIES, utf8("any policy"))])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("duplicate-extension",
                        "A leaf with two authorityInfoAccess extensions, each well-formed.",
                        "5280 4.2", "refuse", "certificate malformed: duplicate extension")
        root, int1, lf = simple(c, extra=[aia_ca_issuers("http://ca.example/int1.crt"),
                                          aia_ca_issuers("http://ca.example/other.crt")])
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("ca-without-key-usage",
                        "An intermediate CA with no keyUsage extension at all: legal (RFC 5280 "
                        "says conforming CAs MUST include it, but its absence is not a path "
                        "validation failure; X509_V_FLAG_X509_STRICT refuses it).",
                        "5280 4.2.1.3, 6.1.4(n)", "accept")
        root = c.root()
        int1 = c.issue("int1", root, ca=True, ku=None)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    # -- name constraints and SAN syntax ---------------------------------------------

    nc = name_constraints([("email", "example.com"), ("dns", "example.com")])

    def nc_case(c, sans, lifetime=None):
        root = c.root()
        int1 = c.issue("int1", root, ca=True, extra=[nc])
        kw = {}
        if lifetime is not None:
            kw = {"not_before": now - HOUR, "not_after": now - HOUR + lifetime}
        lf = c.issue("leaf", int1, san=san(*sans), **kw)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("nc-inside",
                        "The intermediate permits email and DNS under example.com; the leaf's "
                        "SANs are inside.",
                        "5280 4.2.1.10", "accept")
        nc_case(c, [("email", "alice@example.com"), ("dns", "db.example.com")])

    @case
    def _():
        c = corpus.case("nc-email-outside",
                        "The intermediate permits email at example.com; the leaf's "
                        "rfc822Name is alice@other.example.",
                        "5280 4.2.1.10", "refuse", "name constraints violated", live=True)
        nc_case(c, [("email", "alice@other.example")])

    @case
    def _():
        c = corpus.case("nc-dns-outside",
                        "The intermediate permits DNS under example.com; the leaf's dNSName is "
                        "db.other.example.",
                        "5280 4.2.1.10", "refuse", "name constraints violated")
        nc_case(c, [("email", "alice@example.com"), ("dns", "db.other.example")])

    @case
    def _():
        c = corpus.case("nc-email-two-at",
                        "Under an email name constraint, the leaf's rfc822Name is "
                        "alice@@example.com (not a mailbox).",
                        "5280 4.2.1.6, 4.2.1.10", "refuse",
                        "certificate malformed: invalid email address in subjectAltName",
                        live=True)
        nc_case(c, [("email", "alice@@example.com")])

    @case
    def _():
        c = corpus.case("nc-email-no-at",
                        "Under an email name constraint, the leaf's rfc822Name is 'alice' (no "
                        "domain).",
                        "5280 4.2.1.6, 4.2.1.10", "refuse",
                        "certificate malformed: invalid email address in subjectAltName")
        nc_case(c, [("email", "alice")])

    @case
    def _():
        c = corpus.case("nc-dns-leading-dot",
                        "Under a DNS name constraint, the leaf's dNSName is .example.com.",
                        "5280 4.2.1.6, 4.2.1.10", "refuse",
                        "certificate malformed: invalid dns name in subjectAltName")
        nc_case(c, [("email", "alice@example.com"), ("dns", ".example.com")])

    @case
    def _():
        c = corpus.case("nc-dns-underscore",
                        "Under a DNS name constraint, the leaf's dNSName is db_1.example.com "
                        "(not in the preferred name syntax).",
                        "5280 4.2.1.6, 4.2.1.10", "refuse",
                        "certificate malformed: invalid dns name in subjectAltName")
        nc_case(c, [("email", "alice@example.com"), ("dns", "db_1.example.com")])

    # certgate refuses a malformed email or DNS SAN in a login certificate
    # whether or not a name constraint applies: the email is the user claim
    # (claims.user "san:email"), a dNSName may be one too ("san:dns")

    @case
    def _():
        c = corpus.case("san-email-invalid",
                        "No name constraint anywhere; the leaf's rfc822Name is "
                        "alice@@example.com.",
                        "5280 4.2.1.6; certgate: a SAN is a claim", "refuse",
                        "certificate malformed: invalid email address in subjectAltName",
                        live=True)
        root, int1, lf = simple(c, san=san(("email", "alice@@example.com")))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("san-email-quoted-local-part",
                        "No name constraint; the leaf's rfc822Name has a quoted local part "
                        "(\"alice@x\"@example.com): certgate takes dot-atom local parts only, "
                        "as the part before '@' is {user.local}.",
                        "certgate: a SAN is a claim", "refuse",
                        "certificate malformed: invalid email address in subjectAltName")
        root, int1, lf = simple(c, san=san(("email", '"alice@x"@example.com')))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("san-dns-invalid",
                        "No name constraint anywhere; the leaf's dNSName is db_1.example.com.",
                        "5280 4.2.1.6; certgate: a SAN is a claim", "refuse",
                        "certificate malformed: invalid dns name in subjectAltName")
        root, int1, lf = simple(c, san=san(("email", "alice@example.com"),
                                           ("dns", "db_1.example.com")))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("san-dns-wildcard",
                        "The leaf's dNSName is *.example.com: a leftmost wildcard label, as "
                        "server certificates carry, is accepted.",
                        "RFC 6125 6.4.3", "accept")
        root, int1, lf = simple(c, san=san(("email", "alice@example.com"),
                                           ("dns", "*.example.com")))
        c.write([lf, int1], [root])

    # -- validity --------------------------------------------------------------------

    lead = corpus.at_lead  # the "at" cases: notAfter a few seconds ahead

    @case
    def _():
        c = corpus.case("valid-at-notafter-second",
                        "Judged at the very second of the leaf's notAfter: still valid "
                        "(validity is inclusive).",
                        "5280 4.1.2.5", "accept", at=now + lead)
        root, int1, lf = simple(c, not_after=now + lead)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("expired-one-second-after-notafter",
                        "Judged one second after the leaf's notAfter: expired.",
                        "5280 4.1.2.5", "refuse", "certificate expired", at=now + lead + 1)
        root, int1, lf = simple(c, not_after=now + lead)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("expired-leaf", "A leaf whose notAfter was an hour ago.",
                        "5280 4.1.2.5", "refuse", "certificate expired")
        root, int1, lf = simple(c, not_before=now - 3 * HOUR, not_after=now - HOUR)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("expired-intermediate", "An intermediate whose notAfter was an hour ago.",
                        "5280 4.1.2.5, 6.1.3(a)(2)", "refuse", "certificate expired")
        root = c.root()
        int1 = c.issue("int1", root, ca=True, not_after=now - HOUR)
        lf = c.issue("leaf", int1)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("not-yet-valid-leaf",
                        "A leaf whose notBefore is an hour ahead (beyond clock_skew, 30s).",
                        "5280 4.1.2.5", "refuse", "certificate not yet valid")
        root, int1, lf = simple(c, not_before=now + HOUR, not_after=now + 10 * HOUR)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("not-before-within-clock-skew",
                        "A leaf whose notBefore is 10 seconds ahead: within clock_skew (30s).",
                        "certgate clock_skew", "accept")
        root, int1, lf = simple(c, not_before=now + 10, not_after=now + 10 * HOUR)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("crl-expired-at",
                        "Judged two hours ahead, past the root's CRL's nextUpdate (one hour "
                        "ahead; the leaf is still valid then): explain --at moves the CRL's "
                        "clock too, and the detail names the CA whose CRL it is.",
                        "5280 6.3.3(a)(2)", "refuse", "crl expired",
                        detail_contains="crl-expired-at root", at=now + 2 * HOUR)
        root = c.root()
        lf = c.issue("leaf", root)
        c.crl(root, next_update=now + HOUR)
        c.write([lf], [root])

    @case
    def _():
        c = corpus.case("not-before-within-clock-skew-at",
                        "Judged 10 seconds before the leaf's notBefore: within clock_skew "
                        "(30s) of the time judged at, not of the wall clock.",
                        "certgate clock_skew", "accept", at=now - HOUR - 10)
        root, int1, lf = simple(c)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("not-yet-valid-at",
                        "Judged 60 seconds before the leaf's notBefore: beyond clock_skew.",
                        "5280 4.1.2.5", "refuse", "certificate not yet valid",
                        at=now - HOUR - 60)
        root, int1, lf = simple(c)
        c.write([lf, int1], [root])

    # -- order of refusals -------------------------------------------------------------

    ten_years = 10 * YEAR

    @case
    def _():
        c = corpus.case("lifetime-too-long",
                        "A 10-year leaf under a sound chain: certgate's own lifetime rule "
                        "(max_cert_lifetime, 24h by default).",
                        "certgate max_cert_lifetime", "refuse",
                        "lifetime exceeds max_cert_lifetime")
        root, int1, lf = simple(c, not_before=now - HOUR, not_after=now - HOUR + ten_years)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("order-lifetime-vs-critical-extension",
                        "A 10-year leaf under an intermediate with an unknown critical "
                        "extension: the chain defect is named, not the lifetime.",
                        "issue 12 order of refusals", "refuse", "unhandled critical extension")
        root = c.root()
        int1 = c.issue("int1", root, ca=True, extra=[unknown_critical()])
        lf = c.issue("leaf", int1, not_before=now - HOUR, not_after=now - HOUR + ten_years)
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("order-lifetime-vs-name-constraints",
                        "A 10-year leaf whose email is outside its intermediate's name "
                        "constraints: the name constraints are named, not the lifetime.",
                        "issue 12 order of refusals", "refuse", "name constraints violated",
                        live=True)
        nc_case(c, [("email", "alice@other.example")], lifetime=ten_years)

    @case
    def _():
        c = corpus.case("order-lifetime-vs-revoked-intermediate",
                        "A 10-year leaf under a revoked intermediate: the revocation is "
                        "named, not the lifetime.",
                        "issue 12 order of refusals", "refuse", "certificate revoked",
                        detail_contains="order-lifetime-vs-revoked-intermediate int1")
        root, int1, lf = simple(c, not_before=now - HOUR, not_after=now - HOUR + ten_years)
        c.crl(root, revoked=[int1])
        c.crl(int1)
        c.write([lf, int1], [root])

    # -- leaf policy and trust ---------------------------------------------------------

    @case
    def _():
        c = corpus.case("leaf-is-ca",
                        "The leaf says cA TRUE (with clientAuth and digitalSignature).",
                        "certgate: a login certificate is not a CA", "refuse",
                        "certificate is a ca")
        root, int1, lf = simple(c, bc=bc(True), ku=ku("digitalSignature", "keyCertSign"))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("leaf-server-auth-only",
                        "The leaf's extendedKeyUsage is serverAuth only.",
                        "5280 4.2.1.12", "refuse", "certificate not for client authentication")
        root, int1, lf = simple(c, eku=eku(SERVER_AUTH))
        c.write([lf, int1], [root])

    @case
    def _():
        c = corpus.case("unknown-issuer",
                        "A leaf from a CA that is not the trust anchor (the client sends the "
                        "leaf alone).",
                        "5280 6.1", "refuse", "unknown ca", live=True)
        root = c.root()
        other = c.root("other-root", key=corpus.key("other-root"))
        lf = c.issue("leaf", other)
        c.write([lf], [root])

    @case
    def _():
        c = corpus.case("unknown-issuer-with-its-root",
                        "A leaf from a CA that is not the trust anchor, the client sending "
                        "that self-signed root after it.",
                        "5280 6.1", "refuse", "unknown ca")
        root = c.root()
        other = c.root("other-root", key=corpus.key("other-root"))
        lf = c.issue("leaf", other)
        c.write([lf, other], [root])

    @case
    def _():
        c = corpus.case("forged-issuer-same-name",
                        "A leaf naming the trust anchor as its issuer (same name, same "
                        "authorityKeyIdentifier) but signed by another key.",
                        "5280 6.1.3(a)(1)", "refuse", "unknown ca")
        root = c.root()
        forger = c.root("forger", cn=root.cn, key=corpus.key("other-root"))
        lf = c.issue("leaf", forger, aki=aki(root.key.keyid))
        c.write([lf], [root])

    for fn in cases:
        before = len(corpus.names)
        fn()
        assert len(corpus.names) == before + 1
    return corpus.names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="folder to write the cases into (created; must not exist "
                    "or be empty)")
    ap.add_argument("--now", type=int, default=None,
                    help="epoch second the certificates are relative to (default: now)")
    ap.add_argument("--at-lead", type=int, default=5,
                    help="seconds from --now to the notAfter of the cases judged at a "
                    "given time (default 5)")
    args = ap.parse_args(argv)
    now = args.now if args.now is not None else int(time.time())
    os.makedirs(args.out, exist_ok=True)
    if os.listdir(args.out):
        sys.exit("make_corpus: %s is not empty" % args.out)
    keydir = tempfile.mkdtemp(prefix="pathval-keys-")
    try:
        corpus = Corpus(args.out, now, keydir, args.at_lead)
        names = build(corpus)
    finally:
        shutil.rmtree(keydir, ignore_errors=True)
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump({"now": now, "cases": names}, f, indent=2)
        f.write("\n")
    print("%d cases in %s" % (len(names), args.out))


if __name__ == "__main__":
    main()
