#!/usr/bin/env python3
"""Offline checks of deploy/k8s/ that a schema cannot make: the manifests agree with each other
and with the binaries.

A schema check (kubernetes-validate, in deploy/validate.sh) says each field has the right type;
this says the pieces fit: every StatefulSet has its headless Service and that Service selects
its pods; Services reach declared ports; storage nodes advertise their own stable DNS name and
port; every address given to a binary names a Service in the files; every $(VAR) in args is a
defined env var (Kubernetes leaves an undefined one as literal text); probes, resource
requests, non-root users and the cluster secret are on every container.

    python3 deploy/k8s/check.py [DIR]     # exit 1 with one line per problem
"""

import pathlib
import re
import sys

import yaml

BINARIES = {"controller", "storage", "frontend", "velourfog"}
SECRET_NAME = "velourfog-cluster-secret"
SECRET_FILE_ENV = "VF_CLUSTER_SECRET_FILE"


def load(directory):
    objects = []
    for path in sorted(directory.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = path.name
                objects.append(doc)
    return objects


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check(objects):
    problems = []
    checked = []

    def expect(condition, where, what):
        (checked if condition else problems).append(f"{where}: {what}")

    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")]
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    expect(len(namespaces) == 1, "Namespace", f"exactly one namespace is defined ({sorted(namespaces)})")
    namespace = next(iter(namespaces), None)
    for o in objects:
        if o["kind"] != "Namespace":
            where = f"{o['_file']} {o['kind']}/{o['metadata']['name']}"
            expect(o["metadata"].get("namespace") == namespace, where, f"is in namespace {namespace}")

    def service_port(name):
        """The port of Service `name`, if it exists."""
        svc = services.get(name)
        return svc and svc["spec"]["ports"][0]["port"]

    for w in workloads:
        name, kind = w["metadata"]["name"], w["kind"]
        where = f"{w['_file']} {kind}/{name}"
        spec = w["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        expect(selects(spec["selector"]["matchLabels"], labels), where, "selector matches the pod labels")
        sc = pod.get("securityContext", {})
        expect(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where, "pods run as a non-root user")
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        secret_volumes = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == SECRET_NAME]
        expect(len(secret_volumes) == 1, where, f"mounts the Secret {SECRET_NAME}")
        main = pod["containers"][0]
        ports = {p.get("name"): p["containerPort"] for p in main.get("ports", [])}
        port_numbers = set(ports.values())

        for c in pod.get("initContainers", []) + pod["containers"]:
            cw = f"{where} container {c['name']}"
            req = c.get("resources", {}).get("requests", {})
            expect("cpu" in req and "memory" in req, cw, "requests cpu and memory")
            expect("memory" in c.get("resources", {}).get("limits", {}), cw, "has a memory limit")
            csc = c.get("securityContext", {})
            expect(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation is false")
            mounts = c.get("volumeMounts", [])
            for m in mounts:
                expect(m["name"] in volumes or m["name"] in claims, cw, f"volume {m['name']} is defined")
            env = {e["name"]: e for e in c.get("env", [])}
            for ref in re.findall(r"\$\((\w+)\)", " ".join(c.get("args", []) + c.get("command", []))):
                expect(ref in env, cw, f"$({ref}) in its args is a defined env var")

        # The secret: the init container copies it from the Secret's mount to where the main
        # container's VF_CLUSTER_SECRET_FILE points.
        env = {e["name"]: e.get("value") for e in main.get("env", [])}
        secret_file = env.get(SECRET_FILE_ENV)
        main_mounts = {m["mountPath"]: m["name"] for m in main.get("volumeMounts", [])}
        expect(bool(secret_file) and any(secret_file.startswith(p.rstrip("/") + "/") for p in main_mounts),
               where, f"{SECRET_FILE_ENV} ({secret_file}) lies in a mounted volume")
        init = pod.get("initContainers", [])
        copies = [c for c in init if c.get("command", [])[:1] == ["install"] and c["command"][-1] == secret_file]
        expect(len(copies) == 1, where, f"an init container installs the secret at {secret_file}")
        if copies and secret_volumes:
            src_mounts = {m["name"]: m["mountPath"] for m in copies[0].get("volumeMounts", [])}
            src_dir = src_mounts.get(secret_volumes[0]["name"], "")
            expect(copies[0]["command"][-2].startswith(src_dir + "/") and src_dir != "", where,
                   "the init container copies from the Secret's mount")
            expect("-m" in copies[0]["command"] and copies[0]["command"][copies[0]["command"].index("-m") + 1] == "600",
                   where, "the copied secret is mode 600")

        # Probes on declared ports; readiness on /health.
        ready, live = main.get("readinessProbe", {}), main.get("livenessProbe", {})
        expect(ready.get("httpGet", {}).get("path") == "/health", where, "readiness probe is GET /health")
        expect(bool(live), where, "has a liveness probe")
        for probe_name, probe in (("readiness", ready), ("liveness", live)):
            port = probe.get("httpGet", probe.get("tcpSocket", {})).get("port")
            expect(port in ports or port in port_numbers, where, f"{probe_name} probe port {port} is declared")

        # What the binary is told.
        command, args = main.get("command", []), main.get("args", [])
        binary = command[0] if command else (args[0] if args else None)
        expect(binary in BINARIES, where, f"runs one of the image's binaries ({binary})")
        if binary in ("storage", "frontend"):
            controller_addr, own = args[0], args[1]
            host, _, port = controller_addr.rpartition(":")
            expect(service_port(host) == int(port), where, f"controller address {controller_addr} is a Service and its port")
            expect(own.rpartition(":")[2] in {str(p) for p in port_numbers}, where,
                   f"advertised address {own} uses the container's port")
        if binary == "controller":
            port, num_storage, k = (int(a) for a in args[:3])
            expect(port in port_numbers, where, f"controller PORT {port} is the container's port")
            storage = [x for x in workloads if x["metadata"]["name"] == "storage"]
            expect(bool(storage) and num_storage <= storage[0]["spec"]["replicas"], where,
                   f"NUM_STORAGE {num_storage} storage pods exist")
            expect(1 <= k <= num_storage, where, f"REDUNDANCY {k} is between 1 and NUM_STORAGE")
        if kind == "StatefulSet":
            svc = services.get(spec["serviceName"])
            expect(svc is not None and svc["spec"].get("clusterIP") == "None", where,
                   f"serviceName {spec['serviceName']} is a headless Service")
            if svc:
                expect(selects(svc["spec"]["selector"], labels), where, "its headless Service selects its pods")
        if binary == "storage":
            pod_env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in main.get("env", [])}
            expected = f"$(POD_NAME).{spec['serviceName']}.$(POD_NAMESPACE).svc:{ports.get('http')}"
            expect(args[1] == expected, where, f"advertises {expected}")
            expect(pod_env.get("POD_NAME") == "metadata.name" and pod_env.get("POD_NAMESPACE") == "metadata.namespace",
                   where, "POD_NAME and POD_NAMESPACE come from the pod's metadata")
            expect(spec.get("podManagementPolicy") == "Parallel", where, "storage pods start together (Parallel)")
            expect(services[spec["serviceName"]]["spec"].get("publishNotReadyAddresses") is True, where,
                   "its Service publishes pods before they are ready (peers catch up through it)")

    # Every Service selects some workload's pods and reaches a port they declare.
    for name, svc in services.items():
        where = f"{svc['_file']} Service/{name}"
        targets = [w for w in workloads if selects(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
        expect(len(targets) == 1, where, "selects the pods of exactly one workload")
        for t in targets:
            c = t["spec"]["template"]["spec"]["containers"][0]
            declared = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for p in svc["spec"]["ports"]:
                expect(p.get("targetPort", p["port"]) in declared, where, f"targetPort {p.get('targetPort')} is declared")
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        where = f"{pdb['_file']} PodDisruptionBudget/{pdb['metadata']['name']}"
        expect(any(selects(pdb["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"])
                   for w in workloads), where, "selects a workload's pods")
    return checked, problems


def main():
    directory = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
    objects = load(directory)
    kinds = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    checked, problems = check(objects)
    print(f"k8s/check.py: {len(objects)} objects ({', '.join(kinds)}); {len(checked)} checks passed")
    for p in problems:
        print(f"  FAIL {p}")
    return 1 if problems or not objects else 0


if __name__ == "__main__":
    sys.exit(main())
