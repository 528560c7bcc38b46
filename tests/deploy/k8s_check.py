#!/usr/bin/python3
"""Offline checks of deploy/k8s/*.yaml (no API server needed): every document parses,
has apiVersion/kind/metadata.name of the kinds we ship; selectors match pod labels;
every Service targetPort names a container port of the pods it selects; every
volumeMount names a volume, every configMap/secret volume names an object in the set;
every --flag the containers pass is one the binary's --help lists; the coordinator has a
liveness probe on the status socket, a checkpoint PVC and the Prometheus annotations;
the workers' --coordinator points at the coordinator Service's control port; every key
file a container names (CURVE) is a key of the Secret mounted there, or a file an init
container puts on the emptyDir it names.

usage: k8s_check.py K8S_DIR BIN_DIR [--print-probe]
  --print-probe: print the coordinator's liveness command, one word per line, and exit.
Prints one line per problem; exit 1 if any."""
import os
import re
import subprocess
import sys

import yaml

KINDS = {"v1": {"Service", "ConfigMap", "Secret", "PersistentVolumeClaim"},
         "apps/v1": {"StatefulSet", "Deployment"},
         "kustomize.config.k8s.io/v1beta1": {"Kustomization"}}
BINARIES = {"switchyard-coordinator", "switchyard-worker", "switchyard"}


def load(kdir):
    docs = []
    for name in sorted(os.listdir(kdir)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(kdir, name)) as f:
            for i, d in enumerate(yaml.safe_load_all(f)):
                if d is not None:
                    docs.append((f"{name}#{i + 1}", d))
    return docs


def help_flags(bin_dir, exe, sub=None):
    argv = [os.path.join(bin_dir, exe)] + ([sub] if sub else []) + ["--help"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    return set(re.findall(r"--[a-z][a-z-]*", p.stdout + p.stderr))


def main():
    kdir, bin_dir = sys.argv[1], sys.argv[2]
    probs = []
    docs = load(kdir)
    if not docs:
        print(f"{kdir}: no YAML documents")
        return 1
    by_kind = {}
    for where, d in docs:
        av, kind = d.get("apiVersion"), d.get("kind")
        if kind not in KINDS.get(av, set()):
            probs.append(f"{where}: apiVersion {av!r} / kind {kind!r} is not one we ship")
            continue
        if kind != "Kustomization" and not (d.get("metadata") or {}).get("name"):
            probs.append(f"{where}: {kind} without metadata.name")
            continue
        by_kind.setdefault(kind, {})[(d.get("metadata") or {}).get("name", "")] = (where, d)

    # kustomization lists every file
    for where, k in by_kind.get("Kustomization", {}).values():
        files = {n for n in os.listdir(kdir) if n.endswith(".yaml") and n != "kustomization.yaml"}
        if set(k.get("resources", [])) != files:
            probs.append(f"{where}: resources {sorted(k.get('resources', []))} != files {sorted(files)}")

    flags = {b: help_flags(bin_dir, b) for b in ("switchyard-coordinator", "switchyard-worker")}
    flags["switchyard status"] = help_flags(bin_dir, "switchyard", "status")
    pods = {}  # workload name -> (labels, pod spec)
    for kind in ("StatefulSet", "Deployment"):
        for name, (where, d) in by_kind.get(kind, {}).items():
            spec = d["spec"]
            tpl = spec["template"]
            labels = tpl["metadata"].get("labels", {})
            sel = spec["selector"]["matchLabels"]
            if any(labels.get(k) != v for k, v in sel.items()):
                probs.append(f"{where}: selector {sel} does not match the pod labels {labels}")
            if kind == "StatefulSet" and spec.get("serviceName") not in by_kind.get("Service", {}):
                probs.append(f"{where}: serviceName {spec.get('serviceName')!r} is no Service here")
            pspec = tpl["spec"]
            pods[name] = (labels, pspec, where, tpl["metadata"].get("annotations", {}), spec)
            vols = {v["name"]: v for v in pspec.get("volumes", [])}
            claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
            for v in vols.values():
                if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                    probs.append(f"{where}: volume {v['name']}: no ConfigMap {v['configMap']['name']}")
                if "secret" in v and v["secret"]["secretName"] not in by_kind.get("Secret", {}):
                    probs.append(f"{where}: volume {v['name']}: no Secret {v['secret']['secretName']}")
            inits = pspec.get("initContainers", [])
            init_text = " ".join(" ".join(i.get("command") or []) for i in inits)
            for c in inits + pspec["containers"]:
                for m in c.get("volumeMounts", []):
                    if m["name"] not in vols and m["name"] not in claims:
                        probs.append(f"{where}: container {c['name']}: mount {m['name']} names no volume")
            for c in pspec["containers"]:
                words = (c.get("command") or []) + (c.get("args") or []) + \
                    ((c.get("livenessProbe") or {}).get("exec", {}).get("command") or []) + \
                    ((c.get("readinessProbe") or {}).get("exec", {}).get("command") or [])
                for m in c.get("volumeMounts", []):
                    v = vols.get(m["name"], {})
                    for w in words:
                        if not w.startswith(m["mountPath"] + "/"):
                            continue
                        f = w[len(m["mountPath"]) + 1:]
                        if "secret" in v:
                            sec = by_kind.get("Secret", {}).get(v["secret"]["secretName"])
                            have = set(((sec or ("", {}))[1].get("stringData") or {})) | \
                                set(((sec or ("", {}))[1].get("data") or {}))
                            if f not in have:
                                probs.append(f"{where}: container {c['name']} names {w}: no key {f} in Secret "
                                             f"{v['secret']['secretName']}")
                        elif "emptyDir" in v and not re.search(r"/%s\b" % re.escape(f), init_text):
                            probs.append(f"{where}: container {c['name']} names {w}: no init container puts it there")
                argv = (c.get("command") or []) + (c.get("args") or [])
                exe = argv[0] if argv else ""
                if exe not in BINARIES:
                    probs.append(f"{where}: container {c['name']} runs {exe!r}, not a switchyard binary")
                    continue
                key = "switchyard status" if exe == "switchyard" else exe
                for a in argv[1:]:
                    if a.startswith("--") and a not in flags[key]:
                        probs.append(f"{where}: container {c['name']}: {exe} has no flag {a} (its --help)")

    # Services: selectors find pods; target ports name container ports of those pods
    for name, (where, s) in by_kind.get("Service", {}).items():
        sel = s["spec"].get("selector", {})
        hit = [p for p in pods.values() if all(p[0].get(k) == v for k, v in sel.items())]
        if not hit:
            probs.append(f"{where}: Service {name} selects no pod")
            continue
        cports = {p.get("name") for _, ps, *_ in hit for c in ps["containers"] for p in c.get("ports", [])}
        for p in s["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in cports:
                probs.append(f"{where}: Service {name} port {p['name']}: no container port named {p['targetPort']}")

    coord = pods.get("switchyard-coordinator")
    worker = pods.get("switchyard-worker")
    if not coord or not worker:
        probs.append("missing the switchyard-coordinator or switchyard-worker workload")
    else:
        labels, pspec, where, ann, spec = coord
        c = pspec["containers"][0]
        probe = (c.get("livenessProbe") or {}).get("exec", {}).get("command", [])
        if "--print-probe" in sys.argv:
            print("\n".join(probe))
            return 0
        if probe[:2] != ["switchyard", "status"]:
            probs.append(f"{where}: the liveness probe is not `switchyard status` on the status socket: {probe}")
        if ann.get("prometheus.io/scrape") != "true" or not ann.get("prometheus.io/port"):
            probs.append(f"{where}: no Prometheus scrape annotations")
        args = c.get("args", [])
        if "--set" not in args or not any(a.startswith("checkpoint.dir=") for a in args):
            probs.append(f"{where}: checkpoint.dir is not set")
        else:
            ck = next(a for a in args if a.startswith("checkpoint.dir=")).split("=", 1)[1]
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
            if mounts.get(ck) not in claims:
                probs.append(f"{where}: checkpoint.dir {ck} is not on a PersistentVolumeClaim")
        svc = by_kind.get("Service", {}).get("switchyard-coordinator")
        ctrl = {p["name"]: p["port"] for p in svc[1]["spec"]["ports"]}.get("control") if svc else None
        wargs = worker[1]["containers"][0].get("args", [])
        want = f"tcp://switchyard-coordinator:{ctrl}"
        if "--coordinator" not in wargs or wargs[wargs.index("--coordinator") + 1] != want:
            probs.append(f"{worker[2]}: workers do not connect to {want}")
        if "--port" not in wargs:
            probs.append(f"{worker[2]}: the workers' data port is not pinned (--port)")
    for p in probs:
        print(p)
    return 1 if probs else 0


if __name__ == "__main__":
    sys.exit(main())
