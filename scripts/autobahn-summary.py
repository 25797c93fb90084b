#!/usr/bin/env python3
"""Summarise an Autobahn|Testsuite report (index.json) for one agent.

Usage: autobahn-summary.py [--role server|client] [--expected N]
                           [--expected-cases FILE] [--allow-nonstrict]
                           REPORT_DIR AGENT

First line of output:
  autobahn <role> <agent>: 298 OK, 0 NON-STRICT, 3 INFORMATIONAL, 0 UNIMPLEMENTED, 0 FAILED (301 cases)

Exit status 1 if the report or agent is missing, if fewer cases than
expected were reported, if any case is FAILED (in `behavior` or
`behaviorClose`), or if any case is NON-STRICT unless --allow-nonstrict or
AUTOBAHN_ALLOW_NONSTRICT=1. INFORMATIONAL and UNIMPLEMENTED do not fail.
"""

import argparse
import json
import os
import sys

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# Worst first: a case gets the first of these found in behavior/behaviorClose.
PRECEDENCE = ["FAILED", "UNIMPLEMENTED", "NON-STRICT", "INFORMATIONAL", "OK"]


def case_key(case_id):
    try:
        return tuple(int(x) for x in case_id.split("."))
    except ValueError:
        return (float("inf"), case_id)


def classify(entry):
    seen = [entry.get("behavior"), entry.get("behaviorClose")]
    for b in PRECEDENCE:
        if b in seen:
            # Anything unrecognised next to a good value is still suspicious.
            if b in ("OK", "INFORMATIONAL") and any(s not in ORDER for s in seen):
                return "FAILED"
            return b
    return "FAILED"  # unknown / missing behaviour


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report_dir")
    ap.add_argument("agent")
    ap.add_argument("--role", help="label for the summary line (default: from the directory name)")
    ap.add_argument("--expected", type=int, help="minimum number of cases the report must hold")
    ap.add_argument("--expected-cases", help="file with one expected case id per line")
    ap.add_argument("--allow-nonstrict", action="store_true",
                    help="do not fail on NON-STRICT (also AUTOBAHN_ALLOW_NONSTRICT=1)")
    args = ap.parse_args()

    role = args.role
    if not role:
        base = os.path.basename(os.path.normpath(args.report_dir))
        role = base.split("-", 1)[0] if base.startswith(("server-", "client-")) else "report"
    allow_nonstrict = args.allow_nonstrict or env_flag("AUTOBAHN_ALLOW_NONSTRICT")
    head = "autobahn %s %s" % (role, args.agent)

    expected_ids = None
    if args.expected_cases:
        with open(args.expected_cases) as f:
            expected_ids = [l.strip() for l in f if l.strip()]
    expected = args.expected
    if expected is None and expected_ids is not None:
        expected = len(expected_ids)

    index = os.path.join(args.report_dir, "index.json")
    try:
        with open(index) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: no usable report (%s)" % (head, e))
        print("%s: FAIL" % head)
        return 1
    if args.agent not in report:
        print("%s: agent not in %s (agents: %s)" % (head, index, ", ".join(sorted(report)) or "none"))
        print("%s: FAIL" % head)
        return 1
    cases = report[args.agent]

    counts = dict((b, 0) for b in ORDER)
    non_ok = []
    dur9 = 0
    n9 = 0
    dur_all = 0
    for cid in sorted(cases, key=case_key):
        e = cases[cid]
        b = classify(e)
        counts[b] += 1
        d = e.get("duration") or 0
        dur_all += d
        if cid.startswith("9."):
            dur9 += d
            n9 += 1
        if b != "OK":
            non_ok.append((cid, b, e.get("behavior"), e.get("behaviorClose"),
                           e.get("remoteCloseCode")))

    print("%s: %s (%d cases)" % (head, ", ".join("%d %s" % (counts[b], b) for b in ORDER), len(cases)))
    for cid, b, beh, bclose, code in non_ok:
        print("  %-10s %-14s behavior=%s behaviorClose=%s remoteCloseCode=%s"
              % (cid, b, beh, bclose, code))
    print("  9.* duration: %.3f s (%d cases); all cases: %.3f s" % (dur9 / 1000.0, n9, dur_all / 1000.0))

    reasons = []
    if counts["FAILED"]:
        reasons.append("%d FAILED" % counts["FAILED"])
    if counts["NON-STRICT"] and not allow_nonstrict:
        reasons.append("%d NON-STRICT (AUTOBAHN_ALLOW_NONSTRICT=1 to allow)" % counts["NON-STRICT"])
    if expected_ids is not None:
        missing = [c for c in expected_ids if c not in cases]
        if missing:
            shown = " ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
            reasons.append("%d expected cases missing: %s" % (len(missing), shown))
    if expected is not None and len(cases) < expected:
        reasons.append("only %d of %d expected cases reported" % (len(cases), expected))

    if reasons:
        print("%s: FAIL: %s" % (head, "; ".join(reasons)))
        return 1
    print("%s: PASS" % head)
    return 0


if __name__ == "__main__":
    sys.exit(main())
