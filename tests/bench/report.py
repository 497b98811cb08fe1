"""The report of a run: medians, ratios to HAProxy, target verdicts
(summarize), the Markdown table (markdown), the chart (chart) and the files
of a results folder (write_report)."""

import json
import os
import re
import statistics
import subprocess
import sys

from benchlib import MiB, PEERS, tool
from peers import PEER_CLASSES

# --------------------------------------------------------------------------
# report


def median(values):
    return statistics.median(values) if values else None


def fmt(v, digits=None):
    if v is None:
        return "—"
    if isinstance(v, int):
        return "{:,}".format(v)
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return "{:,.{d}f}".format(v, d=digits)


def row(label, metric, lower, target="", ratio_target=None, base=None, absolute=False,
        no_ratio=False):
    """One line of the table: `base` names HAProxy's figure it is compared
    with (default the same metric); `absolute`: the target is on the value
    itself, not on the ratio to HAProxy; `no_ratio`: a count, not compared."""
    return {"label": label, "metric": metric, "lower": lower, "target": target,
            "ratio_target": ratio_target, "base": base or metric, "absolute": absolute,
            "no_ratio": no_ratio}


def pg_points(sizes):
    """(clients, protocol) of each pgbench point; old results had pg_clients."""
    return [tuple(p) for p in sizes.get("pg_points", [(c, "simple") for c in
                                                      sizes.get("pg_clients", [])])]


def pg_key(clients, protocol):
    return "c%d%s" % (clients, "" if protocol == "simple" else "_" + protocol)


def table_rows(res):
    """Every line of the table, in order (see row())."""
    sz = res["sizes"]
    sizes = sorted(set(min(n, res["max_sessions"]) for n in sz["idle"]))
    w = res.get("workers", 1)
    wn = res.get("scale_workers", 2)
    at = "" if w == 1 else ", %d workers" % w
    rows = [
        row("proxy CPU µs per full mTLS handshake" + at, "hs_cpu_us", True, "≤ 0.8×", 0.8),
        row("… certgate with `verify_cache: false` (chain verified every time)",
            "hs_cpu_us_nocache", True, "≤ 0.8×", 0.8, base="hs_cpu_us"),
        row("handshakes per second (wall, %d in flight)%s" % (sz["hs_conc"], at), "hs_per_s",
            False),
        row("MB forwarded per proxy CPU-second, 1 connection" + at, "mb_per_cpu_s_1", False,
            "≥ 1.5×", 1.5),
        row("MB forwarded per proxy CPU-second, 8 connections" + at, "mb_per_cpu_s_8", False,
            "≥ 1.5×", 1.5),
        row("MB/s forwarded (wall), 1 connection" + at, "mb_per_s_1", False),
        row("MB/s forwarded (wall), 8 connections" + at, "mb_per_s_8", False),
    ]
    for v, what in (("drop", "clients drop after the handshake"),
                    ("whole", "whole sessions")):
        stock = "stock client (s_time), %s: " % what
        rows += [
            row(stock + "proxy CPU µs per handshake", "stock_cpu_us_" + v, True, "≤ 0.8×", 0.8),
            row(stock + "handshakes per second (wall)", "stock_hs_per_s_" + v, False),
            row(stock + "upstream connections per handshake", "stock_upstream_per_hs_" + v,
                True, no_ratio=True),
            row(stock + "client certificates decoded per handshake (uprobes)",
                "stock_d2i_X509_per_hs_" + v, True, no_ratio=True),
            row(stock + "chains verified per handshake (uprobes)",
                "stock_X509_verify_cert_per_hs_" + v, True, no_ratio=True),
        ]
    for n in (1, wn):
        tgt = ("≥ 1.2×", 1.2) if n > 1 else ("", None)
        rows += [
            row("full handshakes per second (wall), %d worker%s" % (n, "s" if n > 1 else ""),
                "hs_per_s_w%d" % n, False, *tgt),
            row("proxy CPU µs per full handshake, %d worker%s" % (n, "s" if n > 1 else ""),
                "hs_cpu_us_w%d" % n, True),
            row("MB/s forwarded (wall), 8 connections, %d worker%s" % (n, "s" if n > 1 else ""),
                "mb_per_s_8_w%d" % n, False, *tgt),
        ]
    rows += [
        row("scaling 1 → %d workers, full handshakes per second" % wn, "wscale_hs", False,
            "≥ 1.7", 1.7, absolute=True),
        row("scaling 1 → %d workers, MB/s with 8 connections" % wn, "wscale_mb8", False,
            "≥ 1.7", 1.7, absolute=True),
    ]
    for n in sizes:
        rows.append(row("RSS KiB per idle session, %s sessions%s" % ("{:,}".format(n), at),
                        "rss_kib_per_session_%d" % n, True, "≤ 0.5×", 0.5))
    n = max(sizes)
    rows.append(row("RSS KiB per idle session, %s sessions, %d workers" % ("{:,}".format(n), wn),
                    "rss_kib_per_session_%d_w%d" % (n, wn), True, "≤ 0.5×", 0.5))
    tunnel = "tunnel, pgbench's TLS inside" if res.get("pg_inner_tls") else "tunnel"
    for clients, protocol in pg_points(sz):
        k = pg_key(clients, protocol)
        what = "c=%d%s" % (clients, ", -M prepared" if protocol == "prepared" else "")
        tgt = ("≥ 1.1×", 1.1) if clients > 1 else ("", None)
        rows += [
            row("pgbench -S TPS, %s, %s" % (what, tunnel), "pg_tps_" + k, False, *tgt),
            row("pgbench -S TPS, %s, certgate postgres mode (vs HAProxy's tunnel)" % what,
                "pgmode_tps_" + k, False, *tgt, base="pg_tps_" + k),
            row("proxy CPU µs per transaction, %s, %s" % (what, tunnel),
                "pg_cpu_us_per_txn_" + k, True),
            row("proxy CPU µs per transaction, %s, certgate postgres mode" % what,
                "pgmode_cpu_us_per_txn_" + k, True, base="pg_cpu_us_per_txn_" + k),
        ]
        if clients == 1:
            rows.append(row("pgbench -S latency ms, %s, %s" % (what, tunnel), "pg_lat_ms_" + k,
                            True))
    return rows


SHORT = {"hs_cpu_us": "CPU per\\nhandshake ↓",
         "hs_cpu_us_nocache": "CPU/handshake\\ncache off ↓",
         "mb_per_cpu_s_1": "MB per CPU-s\\n1 conn.",
         "mb_per_cpu_s_8": "MB per CPU-s\\n8 conns",
         "stock_cpu_us_drop": "stock client\\ndrops ↓",
         "stock_cpu_us_whole": "stock client\\nwhole ↓"}


def short_label(metric):
    """The chart's label of a metric (two short lines)."""
    if metric in SHORT:
        return SHORT[metric]
    m = re.match(r"rss_kib_per_session_(\d+)(?:_w(\d+))?$", metric)
    if m:
        return "RSS/idle\\n%s%s ↓" % ("{:,}".format(int(m.group(1))), (
            ", %s w." % m.group(2)) if m.group(2) else "")
    m = re.match(r"(pg|pgmode)_tps_c(\d+)(_prepared)?$", metric)
    if m:
        return "pgbench c=%s\\n%s%s" % (m.group(2), "prep., " if m.group(3) else "",
                                       "pg mode" if m.group(1) == "pgmode" else "tunnel")
    m = re.match(r"(hs_per_s|mb_per_s_8)_w(\d+)$", metric)
    if m:
        return "%s\\n%s workers" % ("handshakes/s" if m.group(1) == "hs_per_s" else "MB/s 8 conns",
                                   m.group(2))
    return metric


def derive(res, med):
    """Figures computed from medians: the scaling from 1 to N workers."""
    wn = res.get("scale_workers", 2)
    for p, m in med.items():
        for name, metric in (("wscale_hs", "hs_per_s_w%d"), ("wscale_mb8", "mb_per_s_8_w%d")):
            one, many = m.get(metric % 1), m.get(metric % wn)
            if one and many:
                m[name] = many / one


def summarize(res):
    """Medians, ratios to HAProxy, and the target verdicts."""
    med = {p: {m: median(v) for m, v in d.items()} for p, d in res["raw"].items()}
    derive(res, med)
    res["medians"] = med
    lines = []
    for r in table_rows(res):
        metric = r["metric"]
        base = med.get("haproxy", {}).get(r["base"])
        line = {"label": r["label"], "metric": metric, "lower_is_better": r["lower"],
                "target": r["target"], "values": {}, "ratios": {}}
        for p in ["direct"] + res["peers"]:
            v = med.get(p, {}).get(metric)
            if v is None and r["base"] != metric and p in ("direct", "haproxy"):
                v = med.get(p, {}).get(r["base"])  # what certgate's variant is compared with
            if v is None:
                continue
            line["values"][p] = v
            if base and not r["no_ratio"]:
                line["ratios"][p] = v / base
        if not line["values"] or (r["base"] != metric and "certgate" not in line["values"]):
            continue
        v = line["values"].get("certgate") if r["absolute"] else line["ratios"].get("certgate")
        if r["ratio_target"] is not None and v is not None:
            line["met"] = v <= r["ratio_target"] if r["lower"] else v >= r["ratio_target"]
        line["absolute"] = r["absolute"]
        line["ratio_target"] = r["ratio_target"]
        lines.append(line)
    res["lines"] = lines
    cg = med.get("certgate", {})
    only = []
    if cg.get("decision_ns") is not None:
        only.append({"label": "policy decision, %s rules (ns)" % "{:,}".format(res["sizes"]["rules"]),
                     "value": cg["decision_ns"], "target": "≤ 2,000 ns",
                     "met": cg["decision_ns"] <= 2000})
        only.append({"label": "policy load, %s rules (ms, polbench)" % "{:,}".format(
            res["sizes"]["rules"]), "value": cg.get("policy_load_ms"), "target": "", "met": None})
    if cg.get("reload_ms_live") is not None:
        n = res["extra"].get("reload", {}).get("sessions", 0)
        only.append({"label": "reload, %s rules, %s live sessions (ms to the HTTP reply)" % (
            "{:,}".format(res["sizes"]["rules"]), "{:,}".format(n)),
            "value": cg["reload_ms_live"], "target": "≤ 100 ms", "met": cg["reload_ms_live"] <= 100})
        only.append({"label": "reload, %s rules, no session (ms)" % "{:,}".format(
            res["sizes"]["rules"]), "value": cg.get("reload_ms_0"), "target": "", "met": None})
        if cg.get("reload_ms_0") is not None and n:
            only.append({"label": "reload: added time per live session (µs)",
                         "value": (cg["reload_ms_live"] - cg["reload_ms_0"]) / n * 1e3,
                         "target": "", "met": None})
        dropped = int(max(res["raw"]["certgate"].get("reload_sessions_dropped", [0])))
        only.append({"label": "sessions wrongly dropped by %d reloads (session.end + failed pings)"
                     % res["runs"], "value": dropped, "target": "0", "met": dropped == 0})
    res["certgate_only"] = only
    return res


def pg_breakdown(res):
    """pgbench at each point with more than one client: TPS as a fraction of
    direct TLS and the CPU per transaction of each process on the path."""
    med = res["medians"]
    paths = [p for p in ["direct"] + res["peers"] + ["certgate-pg"]
             if "breakdown:" + p in med]
    points = [(c, pr) for c, pr in pg_points(res["sizes"]) if c > 1]
    if not paths or not points:
        return []
    names = {"direct": "direct TLS", "certgate-pg": "certgate postgres mode"}
    out = ["", "pgbench -S through each path: TPS as a fraction of direct TLS, and the CPU "
           "per transaction (µs) of each process on the path. \"2 cores\" is the machine's "
           "CPU time per transaction (2 × wall / transactions); \"rest\" is what no process "
           "of the path used (idle, other work on the machine).", "",
           "| point | path | TPS | × direct | pgbench | connector | proxy | PostgreSQL | sum "
           "| 2 cores | rest |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for clients, protocol in points:
        k = pg_key(clients, protocol)
        direct = med.get("breakdown:direct", {}).get("tps_" + k)
        for p in paths:
            b = med["breakdown:" + p]
            tps = b.get("tps_" + k)
            if not tps:
                continue
            parts = [b.get(c + "_us_" + k) or 0.0 for c in ("pgbench", "connector", "proxy",
                                                            "postgres")]
            total = sum(parts)
            cores = (res["versions"].get("cores") or 2) * 1e6 / tps
            out.append("| c=%d%s | %s | %s | %s | %s | %s | %s |" % (
                clients, " prepared" if protocol == "prepared" else "",
                names.get(p, PEER_CLASSES[p].label + " tunnel" if p in PEER_CLASSES else p),
                fmt(tps), "%.2f" % (tps / direct) if direct else "—",
                " | ".join(fmt(x) if x else "—" for x in parts), fmt(total),
                "%s | %s" % (fmt(cores), fmt(max(cores - total, 0.0)))))
    return out


def stock_notes(res):
    """What the stock client's runs left behind, summed over the runs."""
    st = res["extra"].get("stock", {})
    out = []
    for variant, what in (("drop", "clients that drop after the handshake"),
                          ("whole", "whole sessions")):
        parts = []
        for p in ("haproxy", "certgate"):
            runs = st.get(p, {}).get(variant, [])
            if not runs:
                continue
            hs = sum(r["handshakes"] for r in runs)
            up = sum(r["upstream_connections"] for r in runs)
            text = "%s %s upstream connections for %s handshakes" % (
                PEER_CLASSES[p].label, "{:,}".format(up), "{:,}".format(hs))
            if p == "certgate":
                text += " (%s session.start, %s session.abandoned)" % (
                    "{:,}".format(sum(r.get("session_start", 0) for r in runs)),
                    "{:,}".format(sum(r.get("session_abandoned", 0) for r in runs)))
            parts.append(text)
        if parts:
            out.append("Stock client, %s, all runs: %s." % (what, "; ".join(parts)))
    return out


def markdown(res):
    peers = res["peers"]
    out = []
    out.append("# certgate benchmark, %s" % res["date"])
    out.append("")
    out.append("Medians of %d run%s (`%s` sizes); in brackets each figure's ratio to HAProxy."
               % (res["runs"], "s" if res["runs"] > 1 else "", res["mode"]))
    out.append("")
    heads = ["measurement", "direct TLS"] + [PEER_CLASSES[p].label for p in peers] + \
        ["certgate target", "met"]
    out.append("| " + " | ".join(heads) + " |")
    out.append("|" + "|".join(["---"] + ["---:"] * (len(heads) - 3) + ["---", "---"]) + "|")
    for line in res["lines"]:
        cells = [line["label"] + (" ↓" if line["lower_is_better"] else " ↑")]
        d = line["values"].get("direct")
        cells.append(fmt(d) if d is not None else "")
        for p in peers:
            v = line["values"].get(p)
            r = line["ratios"].get(p)
            if v is None:
                cells.append("—")
            elif p == "haproxy" or r is None:
                cells.append(fmt(v))
            else:
                cells.append("%s (%.2f×)" % (fmt(v), r))
        cells.append(line["target"])
        met = line.get("met")
        cells.append("" if met is None else ("yes" if met else "**no**"))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append("↓ lower is better, ↑ higher is better. \"direct TLS\" is pgbench straight to "
               "PostgreSQL with its own TLS (sslmode=require, the same client certificate). "
               "Scaling rows: the figure at %d workers divided by the one at 1 (the target is on "
               "certgate's own figure)." % res.get("scale_workers", 2))
    out += pg_breakdown(res)
    if res.get("certgate_only"):
        out.append("")
        out.append("| certgate only | median | target | met |")
        out.append("|---|---:|---|---|")
        for row in res["certgate_only"]:
            met = row["met"]
            out.append("| %s | %s | %s | %s |" % (
                row["label"], fmt(row["value"]), row["target"],
                "" if met is None else ("yes" if met else "**no**")))
    out.append("")
    out.append("Versions:")
    out.append("")
    order = [p for p in PEERS if p in res["versions"]] + ["openssl", "kernel", "cpu", "cores"]
    for k in order + sorted(set(res["versions"]) - set(order)):
        if k in res["versions"]:
            out.append("- %s: %s" % (k, res["versions"][k]))
    if res["extra"].get("postgres"):
        out.append("- postgres: %s" % res["extra"]["postgres"])
    out.append("")
    notes = ["Every peer negotiated TLS 1.3 / TLS_AES_128_GCM_SHA256 / X25519 with the client "
             "certificate verified, and refused a client without one (checked each run).",
             "Sizes: %s handshakes per run (%d in flight, %d client threads); %d MiB each way "
             "per stream measurement; pgbench %d s per point, scale %d; openssl s_time %s s per "
             "variant; policy %s rules over %d "
             "services." % ("{:,}".format(res["sizes"]["hs"]), res["sizes"]["hs_conc"],
                            res["sizes"]["hs_threads"], res["sizes"]["stream"] // MiB,
                            res["sizes"]["pg_seconds"], res["sizes"]["pg_scale"],
                            res["sizes"].get("stime_seconds", "—"),
                            "{:,}".format(res["sizes"]["rules"]), res["sizes"]["services"])]
    if res["max_sessions"] < max(res["sizes"]["idle"]):
        notes.append("Idle sessions capped at %s for every peer: this machine's hard "
                     "RLIMIT_NOFILE is %s (raising it needs CAP_SYS_RESOURCE, which this sandbox "
                     "does not grant); a proxy holds two descriptors per session and stunnel "
                     "admits at most 125/256 of its limit as clients."
                     % ("{:,}".format(res["max_sessions"]), "{:,}".format(
                         res["nofile_hard_limit"])))
    thr = {p: res["medians"].get(p, {}).get("threads_at_%d" % res["max_sessions"])
           for p in peers}
    if any(thr.values()):
        notes.append("Threads at %s sessions: %s." % ("{:,}".format(res["max_sessions"]), ", ".join(
            "%s %d" % (p, t) for p, t in thr.items() if t)))
    notes += stock_notes(res)
    notes += res.get("notes", [])
    if res["problems"]:
        notes.append("Problems seen: " + "; ".join(res["problems"]))
    floor = res["extra"].get("crypto_floor")
    if floor:
        notes.append("OpenSSL's crypto floor for the server side of one full handshake, measured "
                     "at the start (`openssl speed`): %.0f µs (ECDSA P-256 sign %.0f + 2 × verify "
                     "%.0f + 2 × X25519 %.0f)." % (floor["handshake_floor_us"], floor["sign_us"],
                                                   floor["verify_us"], floor["x25519_us"]))
    notes.append("Whole run: %.0f s; load average %s at the start, %s at the end (other "
                 "work on the machine inflates CPU times and lowers rates: compare ratios "
                 "within one run)." % (res["seconds"], res["extra"].get("loadavg_start", "?"),
                                       res["extra"].get("loadavg_end", "?")))
    for n in notes:
        out.append("- " + n)
    out.append("")
    return "\n".join(out)


COLORS = {"nginx": "#2e8b57", "stunnel": "#e69f00", "certgate": "#8a2be2"}


def chart(res, out_dir):
    """ratios.png: each peer's ratio to HAProxy per measurement (log scale)."""
    gnuplot = tool("gnuplot")
    if not gnuplot:
        return None
    others = [p for p in res["peers"] if p != "haproxy"]
    # the lines with a target on the ratio to HAProxy
    lines = [ln for ln in res["lines"] if ln.get("ratio_target") and not ln.get("absolute")]
    if not others or not lines:
        return None
    targets = {ln["metric"]: ln["ratio_target"] for ln in lines}
    dat = os.path.join(out_dir, "ratios.dat")
    with open(dat, "w") as f:
        f.write("# measurement " + " ".join(others) + " certgate-target\n")
        for ln in lines:
            vals = ["%.4f" % ln["ratios"][p] if p in ln["ratios"] else "NaN" for p in others]
            t = targets.get(ln["metric"])
            vals.append("%.2f" % t if t and "certgate" in others else "NaN")
            f.write('"%s" %s\n' % (short_label(ln["metric"]), " ".join(vals)))
    png = os.path.join(out_dir, "ratios.png")
    gp = os.path.join(out_dir, "ratios.gp")
    with open(gp, "w") as f:
        f.write("""set terminal pngcairo size %(width)d,700 font "DejaVu Sans,10"
set output '%(png)s'
set title "Ratio to HAProxy (1 = HAProxy; log scale), medians of %(runs)d run(s), %(date)s\\n↓ = lower is better; hatched: certgate's target"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set logscale y 2
set yrange [0.0625:16]
set ytics ("1/16" 0.0625, "1/8" 0.125, "1/4" 0.25, "1/2" 0.5, "1" 1, "2" 2, "4" 4, "8" 8, "16" 16)
set grid ytics
set key top left
set xtics font ",10"
set bmargin 5
set arrow from graph 0, first 1 to graph 1, first 1 nohead lw 2 lc rgb "black"
plot %(plots)s
""" % dict(png="ratios.png", runs=res["runs"], date=res["date"], width=max(1400, 125 * len(lines)),
           plots=", ".join(
            ["'%s' using %d:xtic(1) title '%s' lc rgb '%s'" % ("ratios.dat", i + 2, p, COLORS.get(p, "gray"))
             for i, p in enumerate(others)] +
            (["'%s' using %d title 'certgate target' fill pattern 4 lc rgb '%s'"
              % ("ratios.dat", len(others) + 2, COLORS["certgate"])] if "certgate" in others else []))))
    # relative names: the folder can move (the results are committed)
    r = subprocess.run([gnuplot, "ratios.gp"], capture_output=True, text=True, cwd=out_dir)
    if r.returncode != 0:
        raise AssertionError("gnuplot failed: " + r.stderr)
    return png



def write_report(res, out):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    md = markdown(res)
    png = chart(res, out)
    if png:
        md += "\n![ratios to HAProxy](ratios.png)\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    print("written: %s" % out, file=sys.stderr)
