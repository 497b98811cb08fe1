"""Deployment files (docs/deployment.md): what `meson install` installs, the
systemd unit, the logrotate snippet, the example configuration, the Docker
image and the Kubernetes manifests, and the README's first command
(deploy/quickstart) from a clean clone.

No Docker engine runs on the test machine and systemd is not its PID 1, so:
  - the unit is checked by `systemd-analyze verify` (on the installed unit,
    with ExecStart pointing at the installed binary and MANPATH at the
    installed man pages) and `systemd-analyze security --offline=true`
    (exposure <= 1.5), the example configuration is run the way the unit
    would run it (credentials directory, LogsDirectory) by rewriting those
    absolute paths into a temporary folder, and, where the machine allows
    it (root, namespaces, cgroup2, not a sanitizer build), the unit is run
    by a real systemd started as PID 1 of its own PID, mount and cgroup
    namespaces: start, reload, log rotation, watchdog, stop;
  - the Dockerfile is checked statically (the runtime stage's packages
    provide every shared library the binary loads; non-root USER; exec-form
    HEALTHCHECK) and the container layout is run for real: the Kubernetes
    projected volume materialized, certgate serve as uid 10001 on a
    read-only root file system (a private mount namespace), probed with the
    HEALTHCHECK command, stopped with SIGTERM while a session is live.
"""

import fcntl
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

from harness import HoldUpstream, BIN, CA, SLOW, certgate, free_port, run, tls_client, wait_for, whole_lines

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(BIN)))  # <build>/gateway/certgate
UNIT = os.path.join(SRC, "deploy/systemd/certgate.service")
LOW_PORTS = os.path.join(SRC, "deploy/systemd/low-ports.conf")
LOGROTATE = os.path.join(SRC, "deploy/logrotate/certgate")
EXAMPLES = os.path.join(SRC, "deploy/examples")
DOCKERFILE = os.path.join(SRC, "deploy/docker/Dockerfile")
DOCKER_CONFIG = os.path.join(SRC, "deploy/docker/certgate.json")
K8S = os.path.join(SRC, "deploy/kubernetes")
MAN = os.path.join(SRC, "docs/man")
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
MAX_EXPOSURE = 1.5
CONTAINER_UID = 10001


def sh(args, check=True, timeout=120, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout * SLOW, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (
            " ".join(map(str, args)), proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return proc


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


# --- unit files ----------------------------------------------------------------------

def unit_settings(text):
    """[(section, key, value)] of a unit file (no line continuations in ours)."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_values(text, key, section="Service"):
    return [v for s, k, v in unit_settings(text) if s == section and k == key]


def unit_value(text, key, section="Service"):
    values = unit_values(text, key, section)
    assert values, "%s= is not set in [%s]" % (key, section)
    return values[-1]


def exposure(unit_path):
    proc = sh(["systemd-analyze", "security", "--offline=true", "--no-pager", unit_path],
              env=dict(os.environ, SYSTEMD_COLORS="0"))
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    return float(m.group(1)), proc.stdout


def verify(unit_path, manpath):
    """systemd-analyze verify: exit 0 and not a single warning."""
    proc = sh(["systemd-analyze", "verify", unit_path], check=False,
              env=dict(os.environ, MANPATH=manpath, SYSTEMD_COLORS="0"))
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", \
        "systemd-analyze verify %s (%d):\n%s%s" % (unit_path, proc.returncode, proc.stdout,
                                                   proc.stderr)


# --- configuration layouts -----------------------------------------------------------

def rewrite(value, mapping):
    """Every string in a JSON value with its prefixes replaced (mapping: [(old, new)])."""
    if isinstance(value, dict):
        return {k: rewrite(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite(v, mapping) for v in value]
    if isinstance(value, str):
        for old, new in mapping:
            if value.startswith(old):
                return new + value[len(old):]
    return value


class PKI:
    """Certificates and keys for every file the example configurations name."""

    def __init__(self, folder):
        os.makedirs(folder)
        os.chmod(folder, 0o755)
        self.login = CA(os.path.join(folder, "login-ca"), name="login CA")
        self.pg = CA(os.path.join(folder, "pg-ca"), name="PostgreSQL server CA")
        self.db = CA(os.path.join(folder, "db-ca"), name="DB client CA")
        gw = self.login.server("gateway", dns=("localhost", "orders-db", "orders-db.internal",
                                               "billing-db"), ips=("127.0.0.1",))
        self.alice = self.login.issue("alice", "alice@example.com", groups=["dba"],
                                      device_id="laptop-1", trust="high")
        self.files = {
            "gateway.crt": gw.crt, "gateway.key": gw.key,
            "login-ca.crt": self.login.crt, "pg-server-ca.crt": self.pg.crt,
            "db-ca.crt": self.db.crt, "db-ca.key": self.db.key,
        }
        self.files["admin.token"] = write(os.path.join(folder, "admin.token"),
                                          os.urandom(24).hex() + "\n", 0o600)

    def put(self, name, dest, mode=0o444, gid=None):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(self.files[name], dest)
        if gid is not None:
            os.chown(dest, 0, gid)
        os.chmod(dest, mode)
        return dest


def credential_rule(unit_text):
    """LoadCredential=ID:DIR of the unit -> (ID, DIR)."""
    rules = unit_values(unit_text, "LoadCredential")
    assert len(rules) == 1, rules
    ident, _, path = rules[0].partition(":")
    assert ident and path.startswith("/"), rules
    return ident, path


def systemd_layout(fx, name):
    """deploy/examples/ installed the way docs/deployment.md says, in a temporary
    root: /etc/certgate/{certgate.json,policy.json,*.crt}, the secrets in
    /etc/certgate/private/, loaded by the unit's LoadCredential=ID:DIR into
    the credentials directory as ID_<file> (systemd.exec(5)), and the audit
    log in /var/log/<LogsDirectory>/. Returns (config path, config dict)."""
    unit = read(UNIT)
    root = os.path.join(fx.dir, name)
    etc = os.path.join(root, "etc/certgate")
    cred = os.path.join(root, "run/credentials/certgate.service")
    logs = os.path.join(root, "var/log", unit_value(unit, "LogsDirectory"))
    for d in (etc, cred, logs):
        os.makedirs(d)
    cfg = json.loads(read(os.path.join(EXAMPLES, "certgate.json")))
    shutil.copy(os.path.join(EXAMPLES, "policy.json"), os.path.join(etc, "policy.json"))
    ident, src = credential_rule(unit)
    assert src == "/etc/certgate/private", src
    secrets = {"gateway.key", "admin.token", "db-ca.key"}
    for s in secrets:
        fx.pki.put(s, os.path.join(etc, "private", s), 0o600)
    for f in os.listdir(os.path.join(etc, "private")):  # what systemd does at start
        shutil.copy(os.path.join(etc, "private", f), os.path.join(cred, "%s_%s" % (ident, f)))
    named = set()

    def collect(v):
        if isinstance(v, dict):
            for x in v.values():
                collect(x)
        elif isinstance(v, list):
            for x in v:
                collect(x)
        elif isinstance(v, str) and re.search(r"\.(crt|key|token)$", v):
            named.add(v)
    collect(cfg)
    for path in named:
        base = os.path.basename(path)
        if path.startswith("/run/credentials/certgate.service/"):
            assert base.startswith(ident + "_") and base[len(ident) + 1:] in secrets, path
        else:
            assert "/" not in path, "public files sit next to the config: %s" % path
            fx.pki.put(base, os.path.join(etc, base))
    cfg = rewrite(cfg, [("/run/credentials/certgate.service/", cred + "/"),
                        ("/var/log/", os.path.join(root, "var/log") + "/")])
    path = write(os.path.join(etc, "certgate.json"), json.dumps(cfg, indent=2))
    return path, cfg


def k8s_docs():
    docs = {}
    for f in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        for d in yaml.safe_load_all(read(f)):
            if d:
                docs.setdefault(d["kind"], []).append(d)
    return docs


def container_layout(fx, name, uid=None):
    """/etc/certgate as the Deployment's projected volume makes it (ConfigMap
    items and Secret items at their paths, with their modes; group = fsGroup),
    which is also the Docker layout. Returns (config path, config dict)."""
    docs = k8s_docs()
    dep = docs["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    mount = pod["containers"][0]["volumeMounts"][0]
    vol = [v for v in pod["volumes"] if v["name"] == mount["name"]][0]["projected"]
    cms = {c["metadata"]["name"]: c for c in docs["ConfigMap"]}
    etc = os.path.join(fx.dir, name)
    os.makedirs(etc)
    os.chmod(etc, 0o755)
    gid = pod["securityContext"]["fsGroup"] if uid is not None else None
    for source in vol["sources"]:
        if "configMap" in source:
            cm = cms[source["configMap"]["name"]]
            for item in source["configMap"]["items"]:
                write(os.path.join(etc, item["path"]), cm["data"][item["key"]],
                      item.get("mode", vol["defaultMode"]))
        else:
            for item in source["secret"]["items"]:
                fx.pki.put(item["key"], os.path.join(etc, item["path"]),
                           item.get("mode", vol["defaultMode"]), gid)
    for d in glob.glob(os.path.join(etc, "*/")):
        os.chmod(d, 0o755)
    path = os.path.join(etc, "certgate.json")
    return path, json.loads(read(path))


def local_ports(cfg, upstream_port):
    """The configuration with every listener on a free loopback port and every
    upstream at the local holding server."""
    cfg = json.loads(json.dumps(cfg))
    cfg["gateway"]["listen"] = ["127.0.0.1:%d" % free_port() for _ in cfg["gateway"]["listen"]]
    cfg["admin"]["listen"] = "127.0.0.1:%d" % free_port()
    for svc in cfg["services"]:
        if "listen" in svc:
            svc["listen"] = "127.0.0.1:%d" % free_port()
        svc["upstream"] = ["127.0.0.1:%d" % upstream_port]
    return cfg


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


class Serve:
    """certgate serve with stdout (the audit log when path is "-") and stderr
    kept apart; prefix: a command prefix (namespaces, setpriv)."""

    def __init__(self, folder, config_path, prefix=()):
        self.out_path = os.path.join(folder, "serve.stdout")
        self.err_path = os.path.join(folder, "serve.stderr")
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.proc = subprocess.Popen(list(prefix) + [BIN, "serve", "--config", config_path],
                                     stdout=self.out, stderr=self.err)

    def stdout(self):
        return read(self.out_path)

    def stderr(self):
        return read(self.err_path)

    def events(self, path=None):
        text = read(path) if path else self.stdout()
        return [json.loads(l) for l in whole_lines(text) if l.startswith("{")]

    def wait_event(self, name, path=None, timeout=10, **match):
        def find():
            if self.proc.poll() is not None:
                raise AssertionError("certgate serve exited %s: %s"
                                     % (self.proc.returncode, self.stderr()))
            try:
                return [e for e in self.events(path) if e["event"] == name
                        and all(e.get(k) == v for k, v in match.items())]
            except FileNotFoundError:
                return None
        return wait_for(find, timeout, "audit event " + name)[-1]

    def stop(self, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()
        self.err.close()


# --- Dockerfile ------------------------------------------------------------------------

def dockerfile_stages(text):
    """[(base, name, [(INSTRUCTION, args)])] with continuations joined."""
    logical, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if cur and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        logical.append(cur + line)
        cur = ""
    stages = []
    for l in logical:
        instr, _, args = l.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            words = args.split()
            stages.append((words[0], words[2] if len(words) > 2 else None, []))
        elif stages:
            stages[-1][2].append((instr, args.strip()))
    return stages


def apt_packages(instructions):
    pkgs = []
    for instr, args in instructions:
        if instr != "RUN":
            continue
        for part in re.split(r"&&|;", args):
            words = shlex.split(part)
            if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def instruction(instructions, name):
    found = [a for i, a in instructions if i == name]
    assert found, "no %s in the runtime stage" % name
    return found[-1]


def path_variants(path):
    """path, its real path, and both with and without /usr (usrmerge)."""
    out = []
    for p in (path, os.path.realpath(path)):
        out.append(p)
        if p.startswith("/usr/lib/") or p.startswith("/usr/lib64/"):
            out.append(p[4:])
        elif p.startswith("/lib/") or p.startswith("/lib64/"):
            out.append("/usr" + p)
    return out


def owning_packages(paths):
    """{path: the Debian package holding it} (one dpkg-query for all)."""
    variants = {p: path_variants(p) for p in paths}
    query = sorted({v for vs in variants.values() for v in vs})
    proc = subprocess.run(["dpkg-query", "-S"] + query, capture_output=True, text=True)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("diversion") or ": " not in line:
            continue
        pkgs, path = line.split(": ", 1)
        found.setdefault(path, pkgs.split(",")[0].strip().split(":")[0])
    out = {}
    for p, vs in variants.items():
        pkg = next((found[v] for v in vs if v in found), None)
        assert pkg, "no Debian package holds %s" % p
        out[p] = pkg
    return out


def owning_package(path):
    return owning_packages([path])[path]


_DPKG = None


def dpkg_database():
    """{package: "Depends, Pre-Depends"} of every installed package (one
    dpkg-query for all)."""
    global _DPKG
    if _DPKG is None:
        out = sh(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Depends}, ${Pre-Depends}\n"])
        _DPKG = {}
        for line in out.stdout.splitlines():
            name, status, deps = line.split("\t")
            if status.endswith("installed") and "not-installed" not in status:
                _DPKG[name] = deps
    return _DPKG


def dependency_closure(pkgs):
    """pkgs and everything apt installs with them (Depends, Pre-Depends),
    read from this machine's dpkg database (same Debian 12 archive as the
    image's)."""
    db = dpkg_database()
    seen, todo = set(), list(pkgs)
    while todo:
        pkg = todo.pop()
        if pkg in seen:
            continue
        seen.add(pkg)
        assert pkg in db, "package %s is not installed here" % pkg
        for group in db[pkg].split(","):
            alts = [re.sub(r"\(.*?\)|:any|\[.*?\]", "", a).strip() for a in group.split("|")]
            alts = [a for a in alts if a]
            if alts:
                todo.append(next((a for a in alts if a in db), alts[0]))
    return seen


def ldd(path):
    """{soname: resolved path} of what the dynamic loader loads for path."""
    out = {}
    for line in sh(["ldd", path]).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (/\S+)", line)
        if m:
            out[m.group(1)] = m.group(2)
        else:
            m = re.match(r"\s*(/\S+) \(0x", line)
            if m:
                out[os.path.basename(m.group(1))] = m.group(1)
    return out


SANITIZERS = re.compile(r"^lib(asan|ubsan|lsan|tsan|hwasan)\.so")


def runtime_libraries(binary):
    """Every shared library the binary needs at run time, minus sanitizer
    runtimes (the ASan test build links them; a release build does not): the
    binary's DT_NEEDED entries, and everything each of them loads."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]",
                        sh(["readelf", "-d", binary]).stdout)
    resolved = ldd(binary)
    libs = {}
    for soname in needed:
        if SANITIZERS.match(soname):
            continue
        path = resolved[soname]
        libs[soname] = path
        libs.update(ldd(path))
    libs = {k: v for k, v in libs.items() if k != "linux-vdso.so.1"}
    return needed, libs


# --- fixture ---------------------------------------------------------------------------

def setup():
    class Fx:
        pass
    fx = Fx()
    fx.dir = tempfile.mkdtemp(prefix="certgate-deploy-")
    os.chmod(fx.dir, 0o755)
    fx.pki = PKI(os.path.join(fx.dir, "pki"))
    fx.upstream = HoldUpstream()
    fx.procs = []
    # meson install into a temporary root (what `meson install` installs)
    opts = {o["name"]: o["value"] for o in json.loads(
        sh(["meson", "introspect", "--buildoptions", BUILD]).stdout)}
    fx.prefix = opts["prefix"]
    fx.paths = {k: os.path.join(fx.prefix, opts[k])
                for k in ("bindir", "mandir", "sysconfdir", "datadir")}
    fx.dest = os.path.join(fx.dir, "destdir")
    sh(["meson", "install", "--no-rebuild", "--destdir", fx.dest, "-C", BUILD], timeout=120)
    return fx


def teardown(fx):
    fx.upstream.stop()
    for p in fx.procs:
        p.kill()
    if not os.environ.get("CERTGATE_KEEP"):
        shutil.rmtree(fx.dir, ignore_errors=True)
    else:
        print("# kept %s" % fx.dir)


def installed_path(fx, *parts):
    return fx.dest + os.path.join(*parts)


# --- meson install and the man pages -----------------------------------------------------

def test_meson_install_layout(fx):
    p = fx.paths
    expected = [
        (p["bindir"], "certgate"),
        (p["mandir"], "man1/certgate.1"),
        (p["mandir"], "man5/certgate.json.5"),
        (fx.prefix, "lib/systemd/system/certgate.service"),
        (p["sysconfdir"], "logrotate.d/certgate"),
        (p["datadir"], "doc/certgate/examples/certgate.json"),
        (p["datadir"], "doc/certgate/examples/policy.json"),
        (p["datadir"], "doc/certgate/examples/low-ports.conf"),
    ]
    for base, rel in expected:
        assert os.path.isfile(installed_path(fx, base, rel)), "not installed: %s/%s" % (base, rel)
    assert os.access(installed_path(fx, p["bindir"], "certgate"), os.X_OK)
    # the installed unit runs the installed binary with this prefix's sysconfdir
    unit = read(installed_path(fx, fx.prefix, "lib/systemd/system/certgate.service"))
    etc = os.path.join(p["sysconfdir"], "certgate")
    assert unit_value(unit, "ExecStart") == "%s serve --config %s/certgate.json" % (
        os.path.join(p["bindir"], "certgate"), etc), unit_value(unit, "ExecStart")
    assert credential_rule(unit)[1] == etc + "/private"
    for page in ("man1/certgate.1", "man5/certgate.json.5"):
        text = read(installed_path(fx, p["mandir"], page))
        assert text.startswith(".\\\"") or ".TH" in text, page
        assert ".SH NAME" in text or '.SH "NAME"' in text, page


def scd_section(text, start, stop_pattern):
    i = text.index(start)
    m = re.compile(stop_pattern, re.M).search(text, i + len(start))
    return text[i:m.start() if m else len(text)]


def test_man_page_options_match_help(fx):
    """certgate(1) documents exactly the options each subcommand's --help lists."""
    man = read(os.path.join(MAN, "certgate.1.scd"))
    commands = [(["serve"], "## certgate serve"), (["connect"], "## certgate connect"),
                (["check"], "## certgate check"), (["explain"], "## certgate explain"),
                (["health"], "## certgate health"), (["test"], "## certgate test")]
    commands += [(["ca", c], "*certgate ca %s*" % c)
                 for c in ("init", "issue", "server", "revoke", "crl")]
    for args, heading in commands:
        help_text = certgate(*(args + ["--help"])).stdout
        opts = set(re.findall(r"--[a-z][a-z0-9-]*", help_text)) - {"--help"}
        assert opts, args
        section = scd_section(man, heading, r"^(## |\*certgate ca |# )")
        documented = set(re.findall(r"--[a-z][a-z0-9-]*", section)) - {"--help"}
        assert opts <= documented, "%s: not in certgate.1: %s" % (args, sorted(opts - documented))
        assert documented <= opts, "%s: certgate.1 invents %s" % (args, sorted(documented - opts))
    # every subcommand main.c knows is in the page
    usage = certgate("--help").stdout
    for cmd in re.findall(r"^  (\w+) ", usage, re.M):
        assert "*certgate %s*" % cmd in man, cmd


def test_man_page_config_keys_match_loader(fx):
    """certgate.json(5) names every key the loader accepts (policy/pol_config*.c
    and the claim names of policy/pol_claims.c)."""
    man = read(os.path.join(MAN, "certgate.json.5.scd"))
    loader = "".join(read(p) for p in sorted(glob.glob(os.path.join(SRC, "policy/pol_config*.c"))))
    keys = set()
    for block in re.findall(r"keys\[\]\s*=\s*\{(.*?)\};", loader, re.S):
        keys |= set(re.findall(r'"([a-z_]+)"', block))
    claims = read(os.path.join(SRC, "policy/pol_claims.c"))
    m = re.search(r"names\[\]\s*=\s*\{(.*?)\};", claims, re.S)
    keys |= set(re.findall(r'"([a-z_]+)"', m.group(1)))
    assert len(keys) > 40, sorted(keys)
    missing = sorted(k for k in keys if "*%s*" % k not in man)
    assert not missing, "certgate.json(5) lacks %s" % missing


# --- systemd -------------------------------------------------------------------------

def test_systemd_unit_verifies(fx):
    """systemd-analyze verify: the installed unit (its ExecStart/ExecReload
    binary, its man pages) and the source unit, without a single warning."""
    bindir_bin = os.path.join(fx.paths["bindir"], "certgate")
    manpath = installed_path(fx, fx.paths["mandir"])
    for name, text, binary in (
            ("installed", read(installed_path(fx, fx.prefix, "lib/systemd/system/certgate.service")),
             bindir_bin),
            ("source", read(UNIT), "/usr/bin/certgate"),
            ("source+low-ports", read(UNIT) + "\n" + read(LOW_PORTS), "/usr/bin/certgate")):
        assert binary in text, (name, binary)
        target = installed_path(fx, bindir_bin) if name == "installed" else BIN
        folder = os.path.join(fx.dir, "verify-" + name)
        os.makedirs(folder)
        path = write(os.path.join(folder, "certgate.service"), text.replace(binary, target))
        verify(path, manpath)


def test_systemd_security_exposure(fx):
    score, out = exposure(UNIT)
    print("# systemd-analyze security: %.1f" % score)
    assert score <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (score, MAX_EXPOSURE, out)
    # the low-ports drop-in (PrivateUsers=no + CAP_NET_BIND_SERVICE) stays in bounds
    folder = os.path.join(fx.dir, "security-low-ports")
    os.makedirs(folder)
    merged = write(os.path.join(folder, "certgate.service"), read(UNIT) + "\n" + read(LOW_PORTS))
    low, out = exposure(merged)
    print("# with low-ports.conf: %.1f" % low)
    assert low <= MAX_EXPOSURE, "exposure %.1f > %.1f:\n%s" % (low, MAX_EXPOSURE, out)


def test_systemd_unit_settings(fx):
    """The settings the gateway relies on (sd_notify, SIGHUP, watchdog,
    SIGTERM drain, descriptors) and the ones the issue asks for."""
    unit = read(UNIT)
    v = lambda k: unit_value(unit, k)
    assert v("Type") == "notify"
    assert v("ExecStart") == "/usr/bin/certgate serve --config /etc/certgate/certgate.json"
    # SIGHUP only: the reload validates in the gateway, which has the
    # credentials (a first ExecReload= process does not, see the unit)
    assert unit_values(unit, "ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert v("WatchdogSec") == "30s" and v("Restart") == "on-failure"
    assert v("KillSignal") == "SIGTERM" and v("DynamicUser") == "yes"
    assert v("LogsDirectory") == "certgate" and v("UMask") == "0077"
    assert v("CapabilityBoundingSet") == "" and v("NoNewPrivileges") == "yes"
    assert v("ProtectSystem") == "strict" and v("SystemCallArchitectures") == "native"
    assert "@system-service" in unit_values(unit, "SystemCallFilter")
    assert set(v("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert not unit_values(unit, "IPAddressDeny"), "the gateway must reach its databases"
    # two descriptors per connection
    cfg = json.loads(read(os.path.join(EXAMPLES, "certgate.json")))
    assert int(v("LimitNOFILE")) >= 2 * cfg["gateway"]["max_connections"] + 1024
    # the example config is where ExecStart looks, its secrets where
    # LoadCredential puts them, its audit log in LogsDirectory
    ident, src = credential_rule(unit)
    assert src == "/etc/certgate/private"
    assert cfg["gateway"]["key"] == "/run/credentials/certgate.service/%s_gateway.key" % ident
    assert cfg["audit"]["path"].startswith("/var/log/%s/" % v("LogsDirectory"))
    assert "/etc/certgate/private" in v("InaccessiblePaths")


def test_systemd_example_config_checks_and_serves(fx):
    """deploy/examples/ laid out as the unit runs it: `certgate check` accepts
    it, `certgate serve` starts with it (listeners moved to free ports), the
    audit log lands in the LogsDirectory."""
    path, cfg = systemd_layout(fx, "systemd-check")
    proc = certgate("check", "--config", path)
    assert re.search(r": ok \(2 services, 4 rules, policy sha256 [0-9a-f]{64}\)", proc.stdout), \
        proc.stdout
    r = certgate("explain", "--config", path, "--cert", fx.pki.alice.crt, "--service", "orders-db",
                 check=False)
    assert r.returncode == 0 and "dba" in r.stdout, r.stdout + r.stderr
    live = local_ports(cfg, fx.upstream.port)
    write(path, json.dumps(live, indent=2))
    gw = Serve(os.path.dirname(path), path)
    fx.procs.append(gw)
    gw.wait_event("gateway.start", cfg["audit"]["path"])
    sh([BIN, "health", "--admin", live["admin"]["listen"]])
    assert gw.stop() == 0, gw.stderr()
    assert gw.events(cfg["audit"]["path"])[-1]["event"] == "gateway.stop"


def cgroup2_home():
    """Where a throwaway cgroup can be made: the test's own cgroup in the
    cgroup2 hierarchy (None without one)."""
    mount = None
    for line in read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup2":
            mount = fields[4]
            break
    own = [l[3:] for l in read("/proc/self/cgroup").splitlines() if l.startswith("0::")]
    if mount is None or not own:
        return None
    return os.path.join(mount, own[0].lstrip("/"))


def systemd_unavailable():
    if os.geteuid() != 0:
        return "not root"
    for tool in ("unshare", "nsenter", "/lib/systemd/systemd"):
        if not shutil.which(tool):
            return "no " + tool
    if subprocess.run(["unshare", "--mount", "--pid", "--fork", "--cgroup", "true"],
                      capture_output=True).returncode != 0:
        return "cannot create namespaces"
    if cgroup2_home() is None:
        return "no cgroup2 hierarchy"
    if any(SANITIZERS.match(s) for s in runtime_libraries(BIN)[0]):
        return "a sanitizer build (LeakSanitizer needs ptrace, which the unit forbids)"
    return None


class NamespacedSystemd:
    """systemd 252 as PID 1 of fresh PID, mount and cgroup namespaces (like a
    container): its own /run, /var/log and cgroup tree, the host's file
    system (read-only where the unit says so) and network. Only the units in
    `units` exist for it."""

    def __init__(self, folder, units):
        self.folder = folder
        self.cgroup = os.path.join(cgroup2_home(), "certgate-test-%d" % os.getpid())
        os.makedirs(self.cgroup, exist_ok=True)
        boot = write(os.path.join(folder, "boot.sh"), """#!/bin/sh
set -e
mount --make-rshared /
mount -t tmpfs tmpfs /run
mkdir -p /run/lock
mount -t tmpfs tmpfs /var/log
mount -t cgroup2 none /sys/fs/cgroup
exec env container=certgate-test SYSTEMD_UNIT_PATH=%s /lib/systemd/systemd --system \\
    --unit=certgate-test.target --log-target=console
""" % units, 0o755)
        write(os.path.join(units, "certgate-test.target"),
              "[Unit]\nDescription=test\nDefaultDependencies=no\n")
        self.log = open(os.path.join(folder, "systemd.log"), "w")
        # into the throwaway cgroup first: it becomes the namespace's root
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec unshare --pid --fork '
             '--mount --propagation private --mount-proc --cgroup "$1"', self.cgroup, boot],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = None
        try:
            self.pid = wait_for(self._child, 10, "systemd to start")
            wait_for(lambda: self.run("systemctl", "is-system-running", check=False)
                     .stdout.strip() in ("running", "degraded"), 20, "systemd to boot")
        except BaseException:
            self.stop()
            raise

    def _child(self):
        try:
            kids = read("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)).split()
        except FileNotFoundError:
            raise AssertionError("systemd exited: %s" % read(self.log.name))
        return int(kids[0]) if kids else None

    def run(self, *args, check=True, timeout=60):
        return sh(["nsenter", "-t", str(self.pid), "-m", "-p", "--"] + list(args), check=check,
                  timeout=timeout)

    def show(self, unit, *props):
        out = self.run("systemctl", "show", unit, *["-p" + p for p in props]).stdout
        return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)

    def host_pid(self, pid):
        """The host's pid of a process that is pid in this systemd's namespace."""
        ns = os.readlink("/proc/%d/ns/pid" % self.pid)
        for p in os.listdir("/proc"):
            try:
                if not p.isdigit() or os.readlink("/proc/%s/ns/pid" % p) != ns:
                    continue
                nspid = re.search(r"^NSpid:\s+(.*)$", read("/proc/%s/status" % p), re.M)
            except OSError:
                continue
            if nspid and int(nspid.group(1).split()[-1]) == pid:
                return int(p)
        raise AssertionError("no process %d in the namespace" % pid)

    def stop(self):
        if self.proc.poll() is None:
            # the namespace's init: takes all with it
            os.kill(self.pid if self.pid else self.proc.pid, signal.SIGKILL)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        cgroups = sorted((r for r, _, _ in os.walk(self.cgroup)), key=len, reverse=True)
        for d in cgroups:
            try:
                wait_for(lambda: not read(os.path.join(d, "cgroup.procs")).strip(), 10,
                         "the processes of " + d)
                os.rmdir(d)
            except (OSError, AssertionError):
                pass


def test_systemd_unit_runs_under_systemd(fx):
    """The unit, hardening and all, run by a real systemd (252, in its own
    namespaces): started (READY=1), reloaded, audit log rotated with the
    logrotate snippet's own command, watchdog-restarted, stopped with a live
    session; credentials from /etc/certgate/private; online exposure <= 1.5."""
    why = systemd_unavailable()
    if why:
        print("# skipped: %s" % why)
        return
    # outside /tmp, /var/tmp and /home, which the unit hides from the service
    root = tempfile.mkdtemp(prefix="certgate-systemd-test-", dir="/var/lib")
    os.chmod(root, 0o755)
    sd = None
    try:
        path, cfg = systemd_layout(fx, "systemd-run")
        etc = os.path.join(root, "etc/certgate")
        shutil.copytree(os.path.dirname(path), etc)
        os.chmod(os.path.join(etc, "private"), 0o700)
        binary = os.path.join(root, "bin/certgate")
        os.makedirs(os.path.dirname(binary))
        shutil.copy2(BIN, binary)
        # the example as installed: the unit's own credential and log paths
        live = json.loads(read(os.path.join(EXAMPLES, "certgate.json")))
        ports = local_ports(live, fx.upstream.port)
        write(os.path.join(etc, "certgate.json"), json.dumps(ports, indent=2))
        unit = read(UNIT).replace("/usr/bin/certgate", binary).replace("/etc/certgate", etc)
        unit = unit.replace("[Unit]\n", "[Unit]\nDefaultDependencies=no\n", 1)
        out = os.path.join(root, "serve.log")
        unit = unit.replace("[Service]\n", "[Service]\nStandardOutput=append:%s\n"
                            "StandardError=append:%s\n" % (out, out), 1)
        units = os.path.join(root, "units")
        write(os.path.join(units, "certgate.service"), unit)
        sd = NamespacedSystemd(root, units)

        # start: returns once READY=1 arrived
        sd.run("systemctl", "start", "certgate")
        state = sd.show("certgate", "ActiveState", "StatusText", "MainPID", "WatchdogUSec")
        assert state["ActiveState"] == "active" and state["StatusText"] == "serving", state
        assert state["WatchdogUSec"] == "30s", state
        sh([BIN, "health", "--admin", ports["admin"]["listen"]])
        audit = cfg["audit"]["path"].replace(os.path.join(fx.dir, "systemd-run"), "")
        events = lambda f=audit: [json.loads(l)["event"] for l in
                                  sd.run("cat", f).stdout.splitlines()]
        assert events() == ["gateway.start"], events()
        cred = sd.run("ls", "-ln", "/run/credentials/certgate.service").stdout
        for name in ("private_gateway.key", "private_admin.token", "private_db-ca.key"):
            assert name in cred, cred

        # reload: RELOADING=1 ... READY=1 with the result in the status
        sd.run("systemctl", "reload", "certgate")
        wait_for(lambda: sd.show("certgate", "StatusText")["StatusText"] == "reloaded", 10,
                 "Status: reloaded")
        assert events()[-1] == "admin.reload", events()

        # logrotate: rename, then the snippet's postrotate command as it is
        script = re.search(r"postrotate\n(.*?)\n\s*endscript", read(LOGROTATE), re.S).group(1)
        sd.run("mv", audit, audit + ".1")
        sd.run("/bin/sh", "-c", script.strip())
        wait_for(lambda: sd.run("test", "-e", audit, check=False).returncode == 0, 10,
                 "the reopened audit file")
        owner = sd.run("stat", "-c", "%u %a", audit).stdout.split()
        assert owner[0] != "0" and owner[1] == "600", owner  # the dynamic user's, UMask=0077

        # the watchdog restarts a stalled gateway (a 2 s watchdog for the test)
        dropin = os.path.join(units, "certgate.service.d")
        write(os.path.join(dropin, "watchdog.conf"), "[Service]\nWatchdogSec=2s\n")
        sd.run("systemctl", "daemon-reload")
        sd.run("systemctl", "restart", "certgate")
        os.kill(sd.host_pid(int(sd.show("certgate", "MainPID")["MainPID"])), signal.SIGSTOP)
        wait_for(lambda: sd.show("certgate", "NRestarts")["NRestarts"] == "1", 20,
                 "a watchdog restart")
        wait_for(lambda: sd.show("certgate", "StatusText")["StatusText"] == "serving", 20,
                 "the restarted gateway")
        shutil.rmtree(dropin)
        sd.run("systemctl", "daemon-reload")

        # stop with a live session: the drain
        sd.run("systemctl", "restart", "certgate")
        port = port_of(ports["gateway"]["listen"][0])
        tunnel = tls_client(port, fx.pki.alice, fx.pki.login.crt, server_name="orders-db")
        try:
            tunnel.sendall(SSL_REQUEST)
            wait_for(lambda: "session.start" in events(), 10, "session.start")
            t0 = time.monotonic()
            sd.run("systemctl", "stop", "certgate")
            took = time.monotonic() - t0
        finally:
            tunnel.close()
        print("# systemctl stop with a live session: %.2fs" % took)
        state = sd.show("certgate", "ActiveState", "Result")
        assert state == {"ActiveState": "inactive", "Result": "success"}, state
        tail = events()[-2:]
        assert tail == ["session.end", "gateway.stop"], tail
        ends = [json.loads(l) for l in sd.run("cat", audit).stdout.splitlines()]
        assert [e for e in ends if e["event"] == "session.end"][-1]["reason"] == "shutdown"

        score, text = exposure_online(sd)
        print("# systemd-analyze security (running system): %.1f" % score)
        assert score <= MAX_EXPOSURE, text
        assert not re.search(r"certgate: (error|warn):", read(out)), read(out)
    finally:
        if sd is not None:
            sd.stop()
        shutil.rmtree(root, ignore_errors=True)


def exposure_online(sd):
    proc = sd.run("systemd-analyze", "security", "--no-pager", "certgate")
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    return float(m.group(1)), proc.stdout


def test_logrotate_snippet_rotates_with_sigusr1(fx):
    """The snippet matches the unit's audit log; its postrotate command makes
    the running gateway reopen the file: later events go to the new file and
    none is lost. systemctl is replaced by a stand-in that checks the exact
    command and sends the signal (no systemd here); the rotation itself is
    logrotate's when it is installed, else the rename it does."""
    text = read(LOGROTATE)
    m = re.search(r"^(/\S+)\s*\{(.*?)^\}", text, re.M | re.S)
    assert m, text
    glob_path, body = m.group(1), m.group(2)
    directives = [l.strip() for l in body.splitlines() if l.strip()]
    assert "nocreate" in directives and "delaycompress" in directives, directives
    assert "copytruncate" not in directives
    script = re.search(r"postrotate\n(.*?)\n\s*endscript", body, re.S).group(1).strip()
    assert "certgate.service" in script and "USR1" in script, script

    path, cfg = systemd_layout(fx, "logrotate")
    audit = cfg["audit"]["path"]
    assert fnmatch.fnmatch(audit.replace(os.path.join(fx.dir, "logrotate"), ""), glob_path), \
        (audit, glob_path)
    live = local_ports(cfg, fx.upstream.port)
    write(path, json.dumps(live, indent=2))
    gw = Serve(os.path.dirname(path), path)
    fx.procs.append(gw)
    gw.wait_event("gateway.start", audit)

    bindir = os.path.join(fx.dir, "logrotate-bin")
    calls = os.path.join(bindir, "calls")
    write(os.path.join(bindir, "systemctl"), """#!/bin/sh
echo "$*" >> %s
[ "$*" = "kill --kill-whom=main --signal=SIGUSR1 certgate.service" ] && exec kill -USR1 %d
exit 1
""" % (calls, gw.proc.pid), 0o755)
    env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"])
    if shutil.which("logrotate"):
        conf = write(os.path.join(bindir, "logrotate.conf"),
                     text.replace(glob_path, os.path.join(os.path.dirname(audit), "*.jsonl")))
        sh(["logrotate", "--force", "--state", os.path.join(bindir, "state"), conf], env=env)
        rotated = audit + ".1"
        print("# rotated by logrotate")
    else:
        rotated = audit + ".1"
        os.rename(audit, rotated)
        sh(["/bin/sh", "-c", script], env=env)
        print("# logrotate not installed: rotated by rename + the postrotate script")
    assert read(calls).strip() == "kill --kill-whom=main --signal=SIGUSR1 certgate.service"
    wait_for(lambda: os.path.exists(audit), 10, "the reopened audit file")
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_event("admin.reload", audit)
    old = [e["event"] for e in gw.events(rotated)]
    assert old[0] == "gateway.start" and "admin.reload" not in old, old
    assert gw.stop() == 0, gw.stderr()
    new = [e["event"] for e in gw.events(audit)]
    assert new == ["admin.reload", "gateway.stop"], new


# --- Docker ------------------------------------------------------------------------------

def test_dockerfile_runtime_stage_provides_every_library(fx):
    stages = dockerfile_stages(read(DOCKERFILE))
    assert len(stages) >= 2, "multi-stage"
    build_base, build_name, build = stages[0]
    base, _, runtime = stages[-1]
    assert build_base in ("debian:12", "debian:bookworm"), build_base
    assert base in ("debian:12-slim", "debian:bookworm-slim"), base
    packages = apt_packages(runtime)
    assert packages, "the runtime stage installs no package"
    assert not [p for p in packages if p.endswith("-dev") or p in ("gcc", "meson", "ninja-build")]
    # what the binary loads -> the Debian package of each library
    needed, libs = runtime_libraries(BIN)
    by_path = owning_packages(list(libs.values()))
    owners = {soname: by_path[path] for soname, path in libs.items()}
    # debian:12-slim always has libc6 (and its own dependencies); everything
    # else comes with the packages this stage installs, and apt brings their
    # Depends/Pre-Depends along (read from this machine's Debian 12 dpkg)
    base_packages = {"libc6", "libgcc-s1", "gcc-12-base"}
    have = dependency_closure(packages) | base_packages
    missing = {s: p for s, p in owners.items() if p not in have}
    assert not missing, "libraries no runtime package provides: %s" % missing
    # and the libraries certgate itself links are installed by name, not by luck
    direct = {owners[s] for s in needed if s in owners}
    assert direct - base_packages <= set(packages), (direct, packages)
    print("# runtime packages %s; libraries from %s" % (" ".join(packages),
                                                         " ".join(sorted(set(owners.values())))))
    # the build stage installs the -dev package of every meson dependency()
    # (pkg-config name -> its .pc file -> the Debian package holding it), and
    # the programs `meson setup` requires
    build_pkgs = set(apt_packages(build))
    names = set()
    for mb in glob.glob(os.path.join(SRC, "**/meson.build"), recursive=True):
        if not os.path.relpath(mb, SRC).startswith(("build", "demo")):
            names |= set(re.findall(r"\bdependency\('([^']+)'", read(mb)))
    names.discard("threads")
    pcs = {name: os.path.join(sh(["pkg-config", "--variable=pcfiledir", name]).stdout.strip(),
                              name + ".pc") for name in sorted(names)}
    pc_owner = owning_packages(list(pcs.values()))
    for name, pc in pcs.items():
        assert pc_owner[pc] in build_pkgs, "the build stage lacks %s (pkg-config %s)" % (
            pc_owner[pc], name)
    assert {"gcc", "meson", "ninja-build", "pkg-config", "python3", "scdoc"} <= build_pkgs
    # and copies every folder the top-level meson.build descends into
    copied = " ".join(a for i, a in build if i == "COPY")
    for sub in re.findall(r"^subdir\('([^']+)'\)", read(os.path.join(SRC, "meson.build")), re.M):
        first = sub.split("/")[0]
        assert re.search(r"(^|\s)%s(/|\s)" % re.escape(first), copied + " ") or sub in copied, \
            "the build stage does not COPY %s" % sub
    assert re.search(r"COPY --from=%s\s+\S+/gateway/certgate\s+/usr/bin/certgate" % build_name,
                     "\n".join("%s %s" % x for x in runtime)), runtime


def test_dockerfile_runtime_user_and_healthcheck(fx):
    base, _, runtime = dockerfile_stages(read(DOCKERFILE))[-1]
    user = instruction(runtime, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid: %s" % user
    assert int(uid) == CONTAINER_UID
    hc = instruction(runtime, "HEALTHCHECK")
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", hc)
    assert m, "HEALTHCHECK must be CMD in exec form: %s" % hc
    cmd = json.loads(m.group(1))
    cfg = json.loads(read(DOCKER_CONFIG))
    assert cmd == ["/usr/bin/certgate", "health", "--admin", cfg["admin"]["listen"]], cmd
    assert instruction(runtime, "STOPSIGNAL") == "SIGTERM"
    entry = json.loads(instruction(runtime, "ENTRYPOINT"))
    assert entry == ["/usr/bin/certgate"], entry
    assert json.loads(instruction(runtime, "CMD")) == ["serve", "--config",
                                                       "/etc/certgate/certgate.json"]
    exposed = {int(p) for p in instruction(runtime, "EXPOSE").split()}
    listens = {port_of(a) for a in cfg["gateway"]["listen"]}
    listens |= {port_of(s["listen"]) for s in cfg["services"] if "listen" in s}
    assert exposed == listens, (exposed, listens)
    assert cfg["audit"]["path"] == "-"


def test_container_read_only_root_health_and_drain(fx):
    """The container layout (the Kubernetes projected volume, also the Docker
    layout) served as uid 10001 on a read-only root file system: the
    HEALTHCHECK command answers 0, a live session works, and SIGTERM drains
    it ("shutdown", gateway.stop) well inside Docker's 10 s."""
    path, cfg = container_layout(fx, "container", uid=CONTAINER_UID)
    live = local_ports(cfg, fx.upstream.port)
    os.chmod(path, 0o644)
    write(path, json.dumps(live, indent=2), 0o444)
    prefix = []
    isolated = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True).returncode == 0
    if isolated:
        prefix = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                  'mount -o remount,bind,ro / && exec setpriv --reuid=%d --regid=%d '
                  '--clear-groups --no-new-privs --bounding-set=-all --inh-caps=-all "$0" "$@"'
                  % (CONTAINER_UID, CONTAINER_UID)]
        # the key files are group-readable (mode 0440, group = fsGroup)
        prefix[-1] = prefix[-1].replace("--clear-groups", "--groups=%d" % CONTAINER_UID)
    else:
        print("# no mount namespace here: served as root on a writable root")
    gw = Serve(os.path.dirname(path), path, prefix)
    fx.procs.append(gw)
    gw.wait_event("gateway.start")
    if isolated:
        status = read("/proc/%d/status" % gw.proc.pid)
        assert re.search(r"^Uid:\s+%d\s" % CONTAINER_UID, status, re.M), status
        assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    hc = [BIN, "health", "--admin", live["admin"]["listen"]]
    assert sh(hc).returncode == 0

    tunnel = tls_client(port_of(live["gateway"]["listen"][0]), fx.pki.alice, fx.pki.login.crt,
                        server_name="orders-db")
    try:
        tunnel.sendall(SSL_REQUEST)  # require_inner_tls: PostgreSQL's SSLRequest first
        start = gw.wait_event("session.start", service="orders-db")
        assert start["user"] == "alice@example.com"
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code = gw.proc.wait(10 * SLOW)
        took = time.monotonic() - t0
    finally:
        tunnel.close()
    assert code == 0, gw.stderr()
    assert took < 5 * SLOW, "drain took %.1fs" % took
    print("# SIGTERM to exit with a live session: %.2fs" % took)
    events = gw.events()
    end = [e for e in events if e["event"] == "session.end"]
    assert len(end) == 1 and end[0]["reason"] == "shutdown", end
    assert events[-1]["event"] == "gateway.stop", events[-1]
    assert not re.search(r"certgate: (error|warn):", gw.stderr()), gw.stderr()
    assert sh(hc, check=False).returncode == 1
    gw.kill()


# --- Kubernetes ------------------------------------------------------------------------

def test_kubernetes_manifests(fx):
    docs = k8s_docs()
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
                 "Kustomization"):
        assert kind in docs, "no %s in deploy/kubernetes" % kind
    kust = docs["Kustomization"][0]
    for r in kust["resources"]:
        assert os.path.exists(os.path.join(K8S, r)), r
    assert "secret.yaml" not in kust["resources"], "the template must not overwrite real keys"
    dep = docs["Deployment"][0]
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == CONTAINER_UID
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"].rsplit(":", 1)[0] == kust["images"][0]["name"]
    # probes: exec of the same command as the image's HEALTHCHECK
    hc = json.loads(re.search(r"CMD\s+(\[.*\])", instruction(
        dockerfile_stages(read(DOCKERFILE))[-1][2], "HEALTHCHECK")).group(1))
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == hc, probe
    # liveness asks /healthz: not ready (draining, audit failing) is no reason to restart
    live = c["livenessProbe"]["exec"]["command"]
    assert live[:2] == hc[:2] and "--live" in live and set(live) - {"--live"} == set(hc), live
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    grace = pod["terminationGracePeriodSeconds"]
    assert pre[0] == "/bin/sleep" and int(pre[1]) + 10 <= grace, (pre, grace)
    # ports: config listeners = containerPorts = Service targets
    cfg = json.loads(docs["ConfigMap"][0]["data"]["certgate.json"])
    listens = {port_of(a) for a in cfg["gateway"]["listen"]}
    listens |= {port_of(s["listen"]) for s in cfg["services"] if "listen" in s}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(ports.values()) == listens, (ports, listens)
    svc = docs["Service"][0]
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == set(ports), svc["spec"]["ports"]
    assert all(p["protocol"] == "TCP" for p in svc["spec"]["ports"])
    assert cfg["admin"]["listen"].startswith("127.0.0.1:"), "admin stays on loopback"
    # the ConfigMap carries the Docker config and the example policy verbatim
    cm = docs["ConfigMap"][0]["data"]
    assert json.loads(cm["certgate.json"]) == json.loads(read(DOCKER_CONFIG))
    assert json.loads(cm["policy.json"]) == json.loads(read(os.path.join(EXAMPLES, "policy.json")))
    # every Secret item the Deployment mounts exists in the template
    secret = docs["Secret"][0]
    vol = pod["volumes"][0]["projected"]["sources"]
    items = [i for s in vol if "secret" in s for i in s["secret"]["items"]]
    assert {i["key"] for i in items} == set(secret["stringData"]), secret["stringData"].keys()
    for i in items:
        if i["path"].startswith("private/"):
            assert i["mode"] == 0o440, i
    # the mounted layout is one `certgate check` accepts
    path, _ = container_layout(fx, "k8s-check")
    proc = certgate("check", "--config", path)
    assert ": ok (2 services, 4 rules" in proc.stdout, proc.stdout


# --- the README's first command ---------------------------------------------------------

def clean_clone(dest):
    """A clone of the repository with the working tree's changes on top: what
    a clean clone is once the tree is committed (build trees, demo/ and every
    git-ignored file stay behind)."""
    sh(["git", "clone", "--quiet", "--no-hardlinks", SRC, dest], timeout=120)
    git = lambda *a: [f for f in sh(["git", "-C", SRC] + list(a)).stdout.split("\0") if f]
    # changed since HEAD (staged or not, deleted included), then untracked
    for f in git("diff", "--name-only", "-z", "HEAD") + \
            git("ls-files", "-z", "--others", "--exclude-standard"):
        src, dst = os.path.join(SRC, f), os.path.join(dest, f)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
        elif os.path.lexists(dst) and not os.path.exists(src):
            os.remove(dst)


def test_quickstart_from_clean_clone(fx):
    """deploy/quickstart, end to end, in a throwaway clone under a directory
    only root may enter (as a clone in /root is): psql through the tunnel as
    alice, the contractor refused, the audit log printed, PostgreSQL's files
    kept outside the clone where the postgres user reaches them, and
    everything it started stopped and removed again."""
    if not shutil.which("git") or not os.path.exists(os.path.join(SRC, ".git")):
        raise AssertionError("deploy/quickstart is tested in a git clone: no git repository")
    root = tempfile.mkdtemp(prefix="certgate-quickstart-")
    os.chmod(root, 0o700)  # like /root: the postgres user cannot enter the clone
    clone = os.path.join(root, "certgate")
    proc = None
    # test_readme_tour runs a quickstart too: they would pick the same ports
    lock = open(os.path.join(tempfile.gettempdir(), "certgate-quickstart-test.lock"), "w")
    try:
        clean_clone(clone)
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.Popen([os.path.join(clone, "deploy/quickstart")], cwd=clone,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        out, _ = proc.communicate(timeout=480 * SLOW)
        if proc.returncode != 0:
            # the quickstart builds quietly: show why the build failed, if it did
            build_dir = os.path.join(clone, "build")
            cmd = (["ninja", "-C", build_dir] if os.path.exists(build_dir + "/build.ninja")
                   else ["meson", "setup", build_dir])
            build = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=clone)
            out += "\n# %s in the clone:\n%s%s" % (" ".join(cmd[:2]), build.stdout[-4000:],
                                                   build.stderr[-2000:])
        assert proc.returncode == 0, "deploy/quickstart exited %d:\n%s" % (proc.returncode,
                                                                           out[-8000:])
        assert re.search(r"^\s*alice\s*\|", out, re.M), out[-6000:]
        assert "Permission denied" not in out, out[-6000:]
        m = re.search(r"^PostgreSQL's files \(data, certificate copies, socket, log\): (/\S+)$",
                      out, re.M)
        assert m, "the quickstart does not say where PostgreSQL's files are:\n" + out[-6000:]
        pgdir = m.group(1)
        assert not pgdir.startswith(root + "/"), pgdir
        audit = read(os.path.join(clone, "demo/audit.jsonl"))
        events = [json.loads(l) for l in audit.splitlines() if l]
        kinds = [e["event"] for e in events]
        assert "session.start" in kinds and "authz.denied" in kinds, kinds
        denied = [e for e in events if e["event"] == "authz.denied"]
        assert denied[0]["rule"] == "no-contractors", denied
        assert kinds[-1] == "gateway.stop", kinds
        assert "Done" in out
        # nothing left running: its processes, its PostgreSQL (whose files are gone)
        for pid in read(os.path.join(clone, "demo/pids")).split():
            assert not os.path.exists("/proc/%s" % pid) or \
                "zombie" in read("/proc/%s/status" % pid).lower(), "pid %s still runs" % pid
        assert not os.path.exists(pgdir), "%s is left behind" % pgdir
        assert "database system is shut down" in read(os.path.join(clone, "demo/postgres.log"))
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if os.path.exists(os.path.join(clone, "demo")):
            subprocess.run([os.path.join(clone, "deploy/quickstart"), "--stop"], cwd=clone,
                           capture_output=True, timeout=60)
        lock.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    tests = [v for k, v in globals().items() if k.startswith("test_")]
    sys.exit(run(tests, setup=setup, teardown=teardown))
