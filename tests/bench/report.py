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


def table_rows(res):
    """(label, metric, lower_is_better, target text, target ratio) per line;
    SHORT holds the chart's label of each metric."""
    sizes = sorted(set(min(n, res["max_sessions"]) for n in res["sizes"]["idle"]))
    rows = [
        ("proxy CPU µs per full mTLS handshake", "hs_cpu_us", True, "≤ 0.8×", 0.8),
        ("… certgate with `verify_cache: false` (chain verified every time)",
         "hs_cpu_us_nocache", True, "≤ 0.8×", 0.8),
        ("handshakes per second (wall, %d in flight)" % res["sizes"]["hs_conc"], "hs_per_s",
         False, "", None),
        ("MB forwarded per proxy CPU-second, 1 connection", "mb_per_cpu_s_1", False, "≥ 1.5×", 1.5),
        ("MB forwarded per proxy CPU-second, 8 connections", "mb_per_cpu_s_8", False, "≥ 1.5×",
         1.5),
        ("MB/s forwarded (wall), 1 connection", "mb_per_s_1", False, "", None),
        ("MB/s forwarded (wall), 8 connections", "mb_per_s_8", False, "", None),
    ]
    for n in sizes:
        rows.append(("RSS KiB per idle session, %s sessions" % "{:,}".format(n),
                     "rss_kib_per_session_%d" % n, True, "≤ 0.5×", 0.5))
    for c in res["sizes"]["pg_clients"]:
        rows.append(("pgbench -S TPS, c=%d" % c, "pg_tps_c%d" % c, False, "≥ 1.0×", 1.0))
        rows.append(("pgbench -S latency ms, c=%d" % c, "pg_lat_ms_c%d" % c, True, "", None))
        rows.append(("proxy CPU µs per pgbench transaction, c=%d" % c, "pg_cpu_us_per_txn_c%d" % c,
                     True, "", None))
    return rows


def short_label(metric):
    fixed = {"hs_cpu_us": "CPU per\\nhandshake ↓",
             "hs_cpu_us_nocache": "CPU per handshake\\nverify cache off ↓", "hs_per_s": "handshakes\\nper second",
             "mb_per_cpu_s_1": "MB per CPU-s\\n1 connection", "mb_per_cpu_s_8":
             "MB per CPU-s\\n8 connections"}
    if metric in fixed:
        return fixed[metric]
    m = re.match(r"rss_kib_per_session_(\d+)$", metric)
    if m:
        return "RSS per idle\\nsession, %s ↓" % "{:,}".format(int(m.group(1)))
    m = re.match(r"pg_tps_c(\d+)$", metric)
    if m:
        return "pgbench TPS\\nc=%s" % m.group(1)
    return metric


def summarize(res):
    """Medians, ratios to HAProxy, and the target verdicts."""
    med = {p: {m: median(v) for m, v in d.items()} for p, d in res["raw"].items()}
    res["medians"] = med
    lines = []
    for label, metric, lower, target, ratio_target in table_rows(res):
        # a certgate-only variant compares with HAProxy's figure of the same thing
        base = med.get("haproxy", {}).get(metric.replace("_nocache", ""))
        line = {"label": label, "metric": metric, "lower_is_better": lower, "target": target,
                "values": {}, "ratios": {}}
        for p in ["direct"] + res["peers"]:
            v = med.get(p, {}).get(metric)
            if v is None:
                continue
            line["values"][p] = v
            if base:
                line["ratios"][p] = v / base
        if not line["values"]:
            continue
        r = line["ratios"].get("certgate")
        if ratio_target is not None and r is not None:
            line["met"] = r <= ratio_target if lower else r >= ratio_target
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
               "PostgreSQL with its own TLS (sslmode=require, the same client certificate).")
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
             "per stream measurement; pgbench %d s per point, scale %d; policy %s rules over %d "
             "services." % ("{:,}".format(res["sizes"]["hs"]), res["sizes"]["hs_conc"],
                            res["sizes"]["hs_threads"], res["sizes"]["stream"] // MiB,
                            res["sizes"]["pg_seconds"], res["sizes"]["pg_scale"],
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
    lines = [ln for ln in res["lines"] if not ln["metric"].startswith(("mb_per_s", "pg_lat",
                                                                       "pg_cpu"))]
    if not others or not lines:
        return None
    targets = {ln["metric"]: t for _, m, _, _, t in table_rows(res) for ln in lines
               if ln["metric"] == m}
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
        f.write("""set terminal pngcairo size 1400,700 font "DejaVu Sans,10"
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
""" % dict(png=png, runs=res["runs"], date=res["date"], plots=", ".join(
            ["'%s' using %d:xtic(1) title '%s' lc rgb '%s'" % (dat, i + 2, p, COLORS.get(p, "gray"))
             for i, p in enumerate(others)] +
            (["'%s' using %d title 'certgate target' fill pattern 4 lc rgb '%s'"
              % (dat, len(others) + 2, COLORS["certgate"])] if "certgate" in others else []))))
    r = subprocess.run([gnuplot, gp], capture_output=True, text=True)
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
