"""Checks podkit's Kubernetes manifests: each document against the JSON schema of a pinned
Kubernetes version (kubernetes-validate, strict: unknown fields are errors), and every Pod
template against the Pod Security Standards "restricted" profile plus podkit's own rules
(read-only root filesystem, requests and limits, probes on the admin endpoints, the Downward
API env logship reads).

Usage: python validate.py KUBERNETES_VERSION FILE_OR_DIR...
Prints one line per problem ("file: kind/name: container: what, fix") and exits 1 if any.
"""

import os
import sys

import kubernetes_validate
import yaml

# Volume types the restricted profile allows (Pod Security Standards, "Volume Types").
ALLOWED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
    "persistentVolumeClaim", "projected", "secret",
}
# The admin endpoints a podkit container's probes must use, by image.
ADMIN_PATHS = {
    "logship": {"/healthz", "/readyz"},
    "podproxy": {"/live", "/ready"},
}
# The Downward API variables logship turns into labels.
DOWNWARD_API = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "NODE_NAME": "spec.nodeName",
}


def pod_specs(doc):
    """(where, pod spec) of a document that is or holds a Pod template."""
    kind = doc.get("kind")
    if kind == "Pod":
        return [doc.get("spec") or {}]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [((doc.get("spec") or {}).get("template") or {}).get("spec") or {}]
    if kind == "CronJob":
        job = ((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        return [(job.get("template") or {}).get("spec") or {}]
    return []


def image_name(container):
    image = container.get("image", "")
    return image.rsplit("/", 1)[-1].split(":", 1)[0]


def check_pod(spec, problems):
    psc = spec.get("securityContext") or {}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            problems.append(f"{host} is set; remove it (restricted profile)")
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {v.get('name')}: {sorted(kinds)} is not allowed by the restricted profile")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken: set it to false (the examples need no API access)")
    containers = [("initContainers", c) for c in spec.get("initContainers") or []]
    containers += [("containers", c) for c in spec.get("containers") or []]
    for where, c in containers:
        name = f"{where}/{c.get('name')}"
        sc = c.get("securityContext") or {}

        def setting(key):
            return sc.get(key, psc.get(key))

        if setting("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if setting("runAsUser") == 0:
            problems.append(f"{name}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile.type must be RuntimeDefault (pod or container)")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged is not allowed")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: only NET_BIND_SERVICE may be added")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    problems.append(f"{name}: resources.{part}.{r} is missing")
        image = image_name(c)
        if image in ADMIN_PATHS:
            probes = [c.get(p) for p in ("readinessProbe", "livenessProbe", "startupProbe") if c.get(p)]
            if image == "logship":
                # /readyz follows the sinks' reachability; as a readinessProbe it would take the
                # Pod out of its Service whenever the log backend is down.
                if not c.get("livenessProbe"):
                    problems.append(f"{name}: logship needs a livenessProbe on /healthz")
                if c.get("readinessProbe"):
                    problems.append(f"{name}: remove logship's readinessProbe: a Pod is Ready only when every "
                                    "container is, and /readyz is 503 while a log sink is down")
            elif not c.get("readinessProbe") or not c.get("livenessProbe"):
                problems.append(f"{name}: {image} needs a readinessProbe and a livenessProbe on its admin endpoints")
            for p in probes:
                path = (p.get("httpGet") or {}).get("path")
                if path not in ADMIN_PATHS[image]:
                    problems.append(f"{name}: a probe on {path!r}, not on {image}'s admin endpoints {sorted(ADMIN_PATHS[image])}")
        if image == "logship":
            env = {e.get("name"): ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                   for e in c.get("env") or []}
            for var, field in DOWNWARD_API.items():
                if env.get(var) != field:
                    problems.append(f"{name}: env {var} must come from the Downward API field {field}")


def check_file(path, version):
    problems = []
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        label = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if doc.get("apiVersion", "").startswith("kustomize.config.k8s.io"):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path)
            problems.append(f"{label}: schema {version}: {where}: {e.message}")
        except Exception as e:  # an unknown kind or version: say so, do not pass it
            problems.append(f"{label}: cannot validate against {version}: {e}")
        for spec in pod_specs(doc):
            found = []
            check_pod(spec, found)
            problems += [f"{label}: {p}" for p in found]
    return [f"{path}: {p}" for p in problems], len(docs)


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    version = sys.argv[1]
    files = []
    for arg in sys.argv[2:]:
        if os.path.isdir(arg):
            for root, _, names in os.walk(arg):
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith((".yaml", ".yml"))]
        else:
            files.append(arg)
    problems, documents = [], 0
    for path in sorted(files):
        found, n = check_file(path, version)
        problems += found
        documents += n
    for p in problems:
        print(p)
    print(f"{len(files)} files, {documents} documents, {len(problems)} problems (Kubernetes {version})",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
