#!/usr/bin/env python3
"""Real Helm (v4, as a shared library) for the ktx chart, without a helm binary.

    helm/ktx-helm.py lint CHART [-f VALUES.yaml] [--set k=v] [--strict]
    helm/ktx-helm.py template CHART [--namespace NS] [--release NAME] [-f ...] [--set ...]
    helm/ktx-helm.py install RELEASE CHART --namespace NS [-f ...] [--set ...] [--wait]
    helm/ktx-helm.py upgrade RELEASE CHART --namespace NS [-f ...] [--set ...] [--wait]
    helm/ktx-helm.py uninstall RELEASE --namespace NS [--wait]

Values: -f/--values FILE, --set k=v, --set-string k=v, --set-json 'k=JSON', repeatable and applied
in the order given (later wins), the way helm merges them. They are checked against the chart's
values.schema.json before anything is rendered or sent.

The cluster is the one of KUBECONFIG (else ~/.kube/config, else in-cluster), like helm's.

Helm comes from PyPI's `helm-python-sdk` (import name `helm_python`), pinned below: its wheel
ships libhelm_c, a C ABI over Helm's Go SDK (v4.2.3 in 0.2.2). When it is not importable at the
pinned version, this script installs it with pip into a private directory
(`$KTX_CACHE/python/helm-python-sdk-VERSION`, KTX_CACHE defaulting to ~/.cache/ktx) and imports it
from there, so a fresh machine works and no environment is modified (pip's --target also works
where the system Python is "externally managed").

SDK calls used: `lint(path, values, strict=)`, `Chart.load(path)` + `Chart.render(values,
name=, namespace=, is_install=True)` (schema-validated), `Config(kubeconfig_path=,
namespace=)` + `install/upgrade(chart, name, values, namespace=, wait="watcher", timeout=)` and
`uninstall(name, wait=, timeout=)`.

Kubernetes 1.20: checked against the e2e cluster (v1.20.2): install, upgrade (Helm 4 applies
server-side; server-side apply is beta and on by default in 1.20), `wait="watcher"` (kstatus)
and uninstall all work, so no kubectl fallback is needed. A wait that runs out surfaces from the
SDK as HelmCancelledError "context deadline exceeded" with kstatus's reason (e.g. "resource
Deployment/NS/ktx-janitor not ready. status: InProgress, message: Available: 0/1"); this script
turns that into a message saying what to look at.

Exit codes: 0 done; 1 Helm or the cluster said no (lint errors, schema, install failure);
2 bad command line or input (missing chart, bad --set, unreadable values file).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

SDK_PACKAGE = "helm-python-sdk"
SDK_VERSION = "0.2.2"

# Helm's install order (pkg/release/util/kind_sorter.go), so that `template | kubectl apply`
# creates ServiceAccounts and Roles before what uses them.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService",
]


class UsageError(Exception):
    """Bad input: exit 2 with a message that says what to do."""


class HelmFailed(Exception):
    """Helm or the cluster refused: exit 1."""


def say(message: str) -> None:
    print(message, file=sys.stderr)


# --- the SDK --------------------------------------------------------------------------------


def sdk_dir() -> Path:
    cache = os.environ.get("KTX_CACHE") or os.path.join(Path.home(), ".cache", "ktx")
    return Path(cache) / "python" / f"{SDK_PACKAGE}-{SDK_VERSION}"


def load_sdk() -> Any:
    """helm_python at SDK_VERSION: already importable, in the private directory, or pip-installed
    there now."""
    private = sdk_dir()
    if (private / "helm_python").is_dir():
        sys.path.insert(0, str(private))
    try:
        helm = importlib.import_module("helm_python")
        if getattr(helm, "__version__", None) == SDK_VERSION:
            return helm
        say(f"ktx-helm: helm_python {getattr(helm, '__version__', '?')} is installed; "
            f"this script is pinned to {SDK_VERSION}, installing that into {private}")
        for name in [m for m in sys.modules if m == "helm_python" or m.startswith("helm_python.")]:
            del sys.modules[name]
    except ImportError:
        say(f"ktx-helm: installing {SDK_PACKAGE}=={SDK_VERSION} into {private} (once)")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--upgrade", "--target", str(private), f"{SDK_PACKAGE}=={SDK_VERSION}"]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise UsageError(
            f"could not install {SDK_PACKAGE}=={SDK_VERSION} with `{' '.join(cmd)}`:\n"
            f"{done.stdout.strip()}\nInstall it yourself (`python3 -m pip install "
            f"{SDK_PACKAGE}=={SDK_VERSION}`; it needs Python >= 3.10 and a platform with a wheel) "
            "and run this again.")
    if str(private) not in sys.path:
        sys.path.insert(0, str(private))
    importlib.invalidate_caches()
    helm = importlib.import_module("helm_python")
    if helm.__version__ != SDK_VERSION:
        raise UsageError(f"{private} holds helm_python {helm.__version__}, not {SDK_VERSION}: "
                         f"remove that directory and run this again")
    return helm


# --- values ---------------------------------------------------------------------------------


class Ordered(argparse.Action):
    """Keeps -f/--set/--set-string/--set-json in one list, in the order given."""

    def __call__(self, parser, namespace, value, option_string=None):  # type: ignore[override]
        items = list(getattr(namespace, "value_sources", None) or [])
        items.append((self.const, value))
        setattr(namespace, "value_sources", items)


def add_value_flags(p: argparse.ArgumentParser) -> None:
    p.set_defaults(value_sources=[])
    p.add_argument("-f", "--values", metavar="FILE", action=Ordered, const="file",
                   help="a YAML values file (repeatable)")
    p.add_argument("--set", metavar="K=V", action=Ordered, const="set",
                   help="a value, helm --set syntax: a.b=1,list={x,y} (repeatable)")
    p.add_argument("--set-string", metavar="K=V", action=Ordered, const="set-string",
                   help="like --set, values stay strings")
    p.add_argument("--set-json", metavar="K=JSON", action=Ordered, const="set-json",
                   help="a JSON value: 'developers.subjects=[{\"kind\":\"User\",...}]'")


def merge(into: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge, `over` wins; a null in `over` removes the key (helm's rule)."""
    for key, value in over.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def user_values(helm: Any, sources: list[tuple[str, str]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for kind, arg in sources:
        try:
            if kind == "file":
                try:
                    text = Path(arg).read_text()
                except OSError as e:
                    raise UsageError(f"cannot read values file {arg}: {e.strerror}") from e
                parsed = helm.values_from_yaml(text) if text.strip() else {}
            elif kind == "set":
                parsed = helm.parse_set_string(arg)
            elif kind == "set-string":
                parsed = helm.parse_set_string_values(arg)
            else:
                parsed = helm.parse_set_json(arg)
        except helm.HelmError as e:
            flag = "-f" if kind == "file" else f"--{kind}"
            raise UsageError(f"{flag} {arg}: {str(e).strip()}") from e
        if not isinstance(parsed, dict):
            raise UsageError(f"{arg}: values must be a mapping at the top, got {type(parsed).__name__}")
        merge(values, parsed)
    return values


# --- helpers --------------------------------------------------------------------------------


def chart_path(arg: str) -> str:
    path = Path(arg)
    if not (path / "Chart.yaml").is_file():
        raise UsageError(f"{arg} is not a chart directory (no Chart.yaml there); "
                         f"the ktx chart is {Path(__file__).resolve().parent / 'ktx'}")
    return str(path)


def check_namespace(ns: str) -> str:
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", ns):
        raise UsageError(f"--namespace {ns!r} is not a namespace name (lowercase DNS label)")
    return ns


def schema_error(helm: Any, e: Exception) -> HelmFailed:
    return HelmFailed(f"the values were refused by the chart's values.schema.json:\n{e}\n"
                      "The values are listed in helm/ktx/README.md and helm/ktx/values.yaml.")


def render(helm: Any, chart: str, values: dict[str, Any], release: str, ns: str) -> str:
    """The manifests `helm template` prints: NOTES and partials left out, in install order."""
    try:
        with helm.Chart.load(chart) as c:
            rendered = c.render(values, name=release, namespace=ns, is_install=True)
    except helm.HelmValuesError as e:
        raise schema_error(helm, e) from e
    except helm.HelmError as e:
        raise HelmFailed(f"rendering {chart} failed: {e}") from e
    docs = []
    for source, text in sorted(rendered.items()):
        if source.endswith("NOTES.txt") or Path(source).name.startswith("_"):
            continue
        for doc in re.split(r"(?m)^---[ \t]*$", text):
            if not re.search(r"(?m)^kind:", doc):
                continue
            kind = re.search(r"(?m)^kind:\s*(\S+)", doc)
            rank = INSTALL_ORDER.index(kind.group(1)) if kind and kind.group(1) in INSTALL_ORDER \
                else len(INSTALL_ORDER)
            docs.append((rank, source, doc.strip("\n")))
    docs.sort(key=lambda d: (d[0], d[1]))
    return "".join(f"---\n# Source: {source}\n{doc}\n" for _, source, doc in docs)


def config(helm: Any, ns: str) -> Any:
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and os.pathsep not in kubeconfig and not Path(kubeconfig).is_file():
        raise UsageError(f"KUBECONFIG={kubeconfig} does not exist")
    if kubeconfig and os.pathsep not in kubeconfig:
        return helm.Config(kubeconfig_path=kubeconfig, namespace=ns)
    return helm.Config(namespace=ns)


def reach(helm: Any, cfg: Any) -> None:
    try:
        cfg.check_reachable()
    except helm.HelmError as e:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise HelmFailed(f"the cluster of {where} does not answer: {e}\n"
                         "Set KUBECONFIG to the cluster's kubeconfig.") from e


# --- commands -------------------------------------------------------------------------------


def cmd_lint(helm: Any, a: argparse.Namespace) -> int:
    chart = chart_path(a.chart)
    values = user_values(helm, a.value_sources)
    report = helm.lint(chart, values or None, strict=a.strict or None, namespace=a.namespace)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    failed = False
    for m in report.get("messages") or []:
        sev = m.get("severity", 0)
        failed |= sev >= 3 or (a.strict and sev == 2)
        print(f"[{names.get(sev, sev)}] {m.get('path', '')}: {str(m.get('error', '')).strip()}")
    if report.get("errors"):
        failed = True
    print(f"1 chart(s) linted, {'1 chart(s) failed' if failed else '0 chart(s) failed'}")
    return 1 if failed else 0


def cmd_template(helm: Any, a: argparse.Namespace) -> int:
    try:
        helm.validate_release_name(a.release)
    except helm.HelmError as e:
        raise UsageError(f"--release {a.release!r}: {e}") from e
    out = render(helm, chart_path(a.chart), user_values(helm, a.value_sources), a.release,
                 check_namespace(a.namespace))
    sys.stdout.write(out)
    return 0


def release_op(helm: Any, a: argparse.Namespace, upgrade: bool) -> int:
    try:
        helm.validate_release_name(a.release)
    except helm.HelmError as e:
        raise UsageError(f"release name {a.release!r}: {e}") from e
    chart = chart_path(a.chart)
    ns = check_namespace(a.namespace)
    values = user_values(helm, a.value_sources)
    # Check the values first: a schema error should not need a cluster.
    render(helm, chart, values, a.release, ns)
    verb = "upgrade" if upgrade else "install"
    with config(helm, ns) as cfg:
        reach(helm, cfg)
        kwargs = dict(namespace=ns, timeout=a.timeout, wait="watcher" if a.wait else None)
        try:
            if upgrade:
                rel = cfg.upgrade(chart, a.release, values, **kwargs)
            else:
                rel = cfg.install(chart, a.release, values,
                                  create_namespace=a.create_namespace, **kwargs)
        except helm.HelmCancelledError as e:
            raise HelmFailed(
                f"{verb} of {a.release} in {ns}: not ready within {a.timeout}s: {e}\n"
                f"The release is recorded as failed; see `kubectl -n {ns} get pods,events`, then "
                f"`{sys.argv[0]} uninstall {a.release} --namespace {ns}`.") from e
        except helm.HelmValuesError as e:
            raise schema_error(helm, e) from e
        except helm.HelmError as e:
            hint = ""
            if re.search(r"cannot re-?use a name", str(e)):
                hint = "\nIt is installed already: use `upgrade`, or `uninstall` it first."
            elif "namespaces" in str(e) and "not found" in str(e):
                hint = "\nCreate the namespace first, or pass --create-namespace."
            raise HelmFailed(f"{verb} of {a.release} in {ns} failed: {e}{hint}") from e
    print(f"{verb}ed release {rel['name']} in namespace {rel['namespace']}: "
          f"revision {rel['revision']}, {rel['status']}")
    if rel.get("notes"):
        print()
        print(rel["notes"].rstrip())
    return 0


def cmd_uninstall(helm: Any, a: argparse.Namespace) -> int:
    ns = check_namespace(a.namespace)
    with config(helm, ns) as cfg:
        reach(helm, cfg)
        try:
            cfg.uninstall(a.release, wait="watcher" if a.wait else None, timeout=a.timeout)
        except helm.HelmNotFoundError as e:
            raise HelmFailed(f"release {a.release} is not installed in namespace {ns}: {e}") from e
        except helm.HelmError as e:
            raise HelmFailed(f"uninstall of {a.release} in {ns} failed: {e}") from e
    print(f"uninstalled release {a.release} from namespace {ns}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ktx-helm.py",
        description="Lint, render, install and uninstall the ktx chart with real Helm v4 "
                    f"(PyPI {SDK_PACKAGE}=={SDK_VERSION}, installed on first use).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lint = sub.add_parser("lint", help="helm lint CHART")
    lint.add_argument("chart", metavar="CHART")
    lint.add_argument("--strict", action="store_true", help="warnings fail too")
    lint.add_argument("--namespace", default=None)
    add_value_flags(lint)
    lint.set_defaults(run=cmd_lint)

    tpl = sub.add_parser("template", help="print the manifests helm would install")
    tpl.add_argument("chart", metavar="CHART")
    tpl.add_argument("-n", "--namespace", default="default")
    tpl.add_argument("--release", default="ktx", help="release name (default ktx)")
    add_value_flags(tpl)
    tpl.set_defaults(run=cmd_template)

    for name, upgrade in (("install", False), ("upgrade", True)):
        op = sub.add_parser(name, help=f"helm {name} RELEASE CHART")
        op.add_argument("release", metavar="RELEASE")
        op.add_argument("chart", metavar="CHART")
        op.add_argument("-n", "--namespace", required=True)
        op.add_argument("--wait", action="store_true",
                        help="wait until every object is ready (kstatus)")
        op.add_argument("--timeout", type=int, default=300, metavar="SECONDS")
        if not upgrade:
            op.add_argument("--create-namespace", action="store_true")
        add_value_flags(op)
        op.set_defaults(run=lambda helm, a, u=upgrade: release_op(helm, a, u))

    un = sub.add_parser("uninstall", help="helm uninstall RELEASE")
    un.add_argument("release", metavar="RELEASE")
    un.add_argument("-n", "--namespace", required=True)
    un.add_argument("--wait", action="store_true", help="wait until the objects are gone")
    un.add_argument("--timeout", type=int, default=300, metavar="SECONDS")
    un.set_defaults(run=cmd_uninstall)
    return p


def main() -> int:
    args = parser().parse_args()
    helm = None
    try:
        helm = load_sdk()
        return int(args.run(helm, args))
    except UsageError as e:
        say(f"ktx-helm: {e}")
        return 2
    except HelmFailed as e:
        say(f"ktx-helm: {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - any other Helm error: its message, no traceback
        if helm is not None and isinstance(e, helm.HelmError):
            say(f"ktx-helm: {args.command} failed: {e}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
