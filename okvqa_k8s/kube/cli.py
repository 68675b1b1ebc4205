"""`okvqa-k8s submit/status/logs/delete/render/crd/operator`: runs on Kubernetes (or, with --local, here).

Every command validates first and reports all spec problems at once (UserError → one block, exit 2)
before anything is created; the kubernetes client is imported only by the commands that talk to a
cluster, so `render`, `crd` and `--dry-run` work without one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from okvqa_k8s.chart.location import chart_dir_option, resolve_chart_dir
from okvqa_k8s.errors import UserError
from okvqa_k8s.kube import names
from okvqa_k8s.kube.states import Condition, Phase

NAMESPACE_OPTION = click.option(
    "-n", "--namespace", default=None, help="Namespace (default: the kubeconfig context's, else 'default')."
)
SET_OPTION = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a spec field (camelCase path)."
)


def _namespace(namespace: str | None) -> str:
    if namespace:
        return namespace
    try:
        import os

        from kubernetes import config

        _, active = config.list_kube_config_contexts(config_file=os.environ.get("KUBECONFIG") or None)
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig (dry runs, in-cluster): the conventional default
        return "default"


def _run_name(spec_file: Path, name: str | None) -> str:
    """--name, else a FineTune file's metadata.name, else the file's stem made DNS-safe."""
    import re

    import yaml

    if not name:
        try:
            doc = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == names.KIND:
            name = (doc.get("metadata") or {}).get("name")
        name = name or re.sub(r"[^a-z0-9-]+", "-", spec_file.stem.lower()).strip("-")[: names.MAX_NAME]
    return names.check_name(name)


def _kube(context: str | None = None) -> Any:
    from okvqa_k8s.kube.client import Kube

    return Kube.from_config(context=context)


def _api_call(what: str, fn: Any, *args: Any) -> Any:
    """Turn API/connection failures into one-line user errors naming what was being done."""
    from urllib3.exceptions import HTTPError

    from okvqa_k8s.kube.client import ApiError

    try:
        return fn(*args)
    except ApiError as exc:
        raise UserError(f"{what}: {exc.status} {exc.reason}: {exc.message}") from None
    except HTTPError as exc:
        raise UserError(f"{what}: cannot reach the Kubernetes API server ({type(exc).__name__})") from None


def _read_manifest(uri: str) -> Any:
    """A `data prepare` manifest.json under `uri`: the document, None when it cannot be read from here
    (S3 out of reach or without credentials: the operator reads it again in the cluster), and
    FileNotFoundError when the store says there is none."""
    from okvqa_k8s import storage
    from okvqa_k8s.errors import OkvqaError
    from okvqa_k8s.layout import PREPARED_MANIFEST

    try:
        doc = storage.read_json(storage.join(uri, PREPARED_MANIFEST))
    except FileNotFoundError:
        raise
    except (OkvqaError, OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def check_evaluation_set(spec: Any) -> None:
    """Before anything is created: the evaluation set exists and has questions in every category
    evaluation.categories asks for, and dataset.categories says what the dataset was prepared with."""
    from okvqa_k8s.evaluate.evalset import evaluation_problems
    from okvqa_k8s.layout import PREPARED_MANIFEST, eval_dataset_uri

    if not spec.evaluation.enabled:
        return
    eval_uri = eval_dataset_uri(spec)
    try:
        eval_manifest = _read_manifest(eval_uri)
    except FileNotFoundError:
        raise UserError(
            f"evaluation.datasetUri: no evaluation set at {eval_uri} ({PREPARED_MANIFEST} is missing); "
            "`okvqa-k8s data prepare` writes one to <dataset>/eval and `data stage` uploads it with the "
            "dataset, or set evaluation.datasetUri to a dataset prepared with the categories to evaluate"
        ) from None
    try:
        train_manifest = _read_manifest(spec.dataset.uri)
    except FileNotFoundError:
        train_manifest = None  # training reports a missing dataset itself
    problems = evaluation_problems(
        evaluated=spec.evaluated_categories,
        trained=spec.trained_categories,
        split=spec.dataset.eval_split,
        eval_uri=eval_uri,
        eval_manifest=eval_manifest,
        train_uri=spec.dataset.uri,
        train_manifest=train_manifest,
    )
    if problems:
        raise UserError("\n".join(problems))


def _stage_if_local(spec: Any) -> Any:
    """A cluster cannot read this machine's disk: upload a local dataset (its eval/ goes along) and a
    local evaluation.datasetUri beside the outputs first. The evaluation set is checked before."""
    from okvqa_k8s import storage
    from okvqa_k8s.layout import dataset_uri, staged_eval_dataset_uri
    from okvqa_k8s.storage.uri import parse

    local = [
        (field, uri)
        for field, uri in (
            ("dataset.uri", spec.dataset.uri),
            ("evaluation.datasetUri", spec.evaluation.dataset_uri),
        )
        if uri and parse(uri).scheme == "file"
    ]
    if local and parse(spec.output_uri).scheme != "s3":
        raise UserError(
            f"{local[0][0]} {local[0][1]!r} and outputUri {spec.output_uri!r} are local paths, which pods "
            "cannot read: use s3:// URIs, or run on this machine with `okvqa-k8s submit --local`"
        )
    for field, uri in local:
        if not Path(uri).is_dir():
            raise UserError(f"{field}: {uri} is not a directory")
    check_evaluation_set(spec)
    if not local:
        return spec
    doc = spec.to_wire()
    for field, uri in local:
        if field == "dataset.uri":
            target = dataset_uri(spec)
            doc["dataset"]["uri"] = target
        else:
            target = staged_eval_dataset_uri(spec)
            doc["evaluation"]["datasetUri"] = target
        click.echo(f"staging {uri} → {target}", err=True)
        storage.stage_dataset(uri, target, verify=True)
    from okvqa_k8s.spec import parse_spec

    return parse_spec(doc)


@click.command("submit")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="FineTune name (DNS-1035; default: metadata.name or the file name).")
@NAMESPACE_OPTION
@SET_OPTION
@click.option(
    "--dry-run", is_flag=True, help="Print the YAML of everything that would be created; create nothing."
)
@click.option(
    "--no-operator", is_flag=True, help="Apply the rendered objects directly and reconcile from here."
)
@click.option(
    "--local", "local", is_flag=True, help="Run the rendered replicas as local processes (no cluster)."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("okvqa-runs"),
    show_default=True,
    help="--local: logs, node scratch and served models go here.",
)
@click.option("--keep-serving", is_flag=True, help="--local: keep the server running after evaluation.")
@click.option("--context", help="kubeconfig context.")
def submit(
    spec_file: Path,
    name: str | None,
    namespace: str | None,
    overrides: tuple[str, ...],
    dry_run: bool,
    no_operator: bool,
    local: bool,
    workdir: Path,
    keep_serving: bool,
    context: str | None,
) -> None:
    """Validate SPEC_FILE and start the run: a FineTune for the operator, or locally with --local."""
    from okvqa_k8s.kube.render import Owner, render_children, render_finetune, to_yaml
    from okvqa_k8s.spec import load_spec

    spec = load_spec(spec_file, list(overrides))
    run = _run_name(spec_file, name)
    if local:
        from okvqa_k8s.kube.backends.local import run_local

        check_evaluation_set(spec)
        _report(run, run_local(spec, run, workdir, keep_serving=keep_serving, echo=click.echo))
        return
    ns = _namespace(namespace)
    owner = Owner(run, ns)
    if dry_run:
        head = [] if no_operator else [render_finetune(spec, owner)]
        note = "# objects the run creates" + (
            "" if no_operator else " (the operator creates them, owned by it)"
        )
        click.echo(to_yaml(head) + "---\n" + note + "\n" + to_yaml(render_children(spec, owner)), nl=False)
        return
    spec = _stage_if_local(spec)
    kube = _kube(context)
    if no_operator:
        _report(run, _drive_without_operator(kube, spec, owner))
        return
    _, created = _api_call(f"creating FineTune {ns}/{run}", kube.create, render_finetune(spec, owner))
    if not created:
        raise UserError(
            f"FineTune {ns}/{run} already exists: delete it (okvqa-k8s delete {run}) or pick --name"
        )
    click.echo(f"finetune.okvqa.dev/{run} created in namespace {ns}")
    click.echo(f"watch it: okvqa-k8s status {run} -n {ns} -w   (or: kubectl get finetune {run} -n {ns} -w)")


def _drive_without_operator(kube: Any, spec: Any, owner: Any) -> dict[str, Any]:
    """The operator's driver, run from here against the API: same decide, same objects (not owned, so
    `delete` finds them by label); Events become lines on stderr. Returns the final status."""
    from okvqa_k8s.kube.backends.kubernetes import KubernetesCluster
    from okvqa_k8s.kube.cluster import Run
    from okvqa_k8s.kube.driver import until_terminal

    cluster = KubernetesCluster(kube, echo=lambda line: click.echo(line, err=True))
    run = _api_call(
        f"running {owner.name} in {owner.namespace}",
        lambda: until_terminal(cluster, Run(owner, spec.to_wire()), poll_seconds=5),
    )
    click.echo(run.summary())
    return dict(run.status)


def _report(run: str, status: dict[str, Any]) -> None:
    """A run driven from here that did not succeed exits non-zero with its reason."""
    if status.get("phase") != Phase.SUCCEEDED:
        raise UserError(f"run {run} {status.get('phase', 'stopped')}: {status.get('message', '')}")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return ""
    import calendar

    seconds = int(time.time() - calendar.timegm(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ")))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _untrained_cell(untrained: dict[str, Any]) -> str:
    """`−1.2 pp / 337 q` (the change on the categories not trained on), or the fine-tuned figure alone."""
    if not untrained.get("questions"):
        return ""
    if isinstance(untrained.get("delta"), int | float):
        figure = f"{untrained['delta']:+.1f}".replace("-", "\u2212") + " pp"
    else:
        figure = f"{untrained.get('finetuned', 0.0):.2f}%"
    return f"{figure} / {untrained['questions']} q"


def _phase_cell(st: dict[str, Any]) -> str:
    """The phase, with how long a run has waited in its Kueue queue while it waits: `Queued (4m)`."""
    phase = st.get("phase", "")
    since = (st.get("queue") or {}).get("since")
    return f"{phase} ({_age(since)})" if since and phase == Phase.QUEUED else phase


def _queue_line(st: dict[str, Any]) -> str:
    """What `status NAME` says of a queued run: where it waits, since when, what Kueue says."""
    queue = st.get("queue") or {}
    if not queue:
        return ""
    waited = int(queue.get("waitedSeconds", 0))
    text = f"\nqueue: LocalQueue {queue['name']}"
    if queue.get("since"):
        text += f", waiting {_age(queue['since'])} (since {queue['since']})"
        if queue.get("reason"):
            text += f", Kueue reason {queue['reason']}"
        if waited:
            text += f"; waited {waited} s before"
    elif st.get("phase") == Phase.FAILED and not _admitted(st):
        text += f", left without being admitted after waiting {waited} s"
    else:
        text += f", admitted after waiting {waited} s"
    return text


def _admitted(st: dict[str, Any]) -> bool:
    from okvqa_k8s.kube.decide import condition_true  # decide pulls in the evaluation code: only when needed

    return condition_true({"status": st}, Condition.ADMITTED) is not None


def status_text(item: dict[str, Any]) -> str:
    """`status NAME`: the row, the phase's message, where a queued run waits, every condition."""
    text = format_table(status_rows([item]))
    st = item.get("status") or {}
    if st.get("message"):
        text += f"\n\nmessage: {st['message']}"
    text += _queue_line(st)
    for cond in st.get("conditions", []):
        why = f"({cond.get('reason', '')}): {cond.get('message', '')}"
        text += f"\n  {cond['type']}={cond['status']} {why}"
    return text


def status_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows of FineTunes, like the CRD's printer columns plus the before → after accuracy (on the
    categories trained on) and its change on the categories not trained on."""
    rows = [["NAME", "PHASE", "NODES", "PROGRESS", "ACCURACY", "UNTRAINED", "ENDPOINT", "AGE"]]
    for item in items:
        st = item.get("status") or {}
        acc = st.get("accuracy") or {}
        accuracy = " → ".join(f"{acc[k]:.2f}%" for k in ("base", "finetuned") if k in acc)
        rows.append(
            [
                item["metadata"]["name"],
                _phase_cell(st),
                str((item.get("spec") or {}).get("nodes", "")),
                st.get("progress", ""),
                accuracy,
                _untrained_cell(st.get("untrainedAccuracy") or {}),
                st.get("endpoint", ""),
                _age(item["metadata"].get("creationTimestamp")),
            ]
        )
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@click.command("status")
@click.argument("name", required=False)
@NAMESPACE_OPTION
@click.option("-w", "--watch", is_flag=True, help="Refresh every few seconds until interrupted.")
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--context", help="kubeconfig context.")
def status(
    name: str | None, namespace: str | None, watch: bool, interval: float, context: str | None
) -> None:
    """Show FineTunes (all in the namespace, or NAME with its conditions)."""
    kube = _kube(context)
    ns = _namespace(namespace)
    while True:
        if name:
            item = _api_call(
                f"reading FineTune {ns}/{name}", kube.get, names.API_VERSION, names.KIND, ns, name
            )
            if item is None:
                raise UserError(f"FineTune {ns}/{name} not found")
            text = status_text(item)
        else:
            items = _api_call(f"listing FineTunes in {ns}", kube.list, names.API_VERSION, names.KIND, ns)
            text = format_table(status_rows(items)) if items else f"no FineTunes in namespace {ns}"
        click.echo(text)
        if not watch:
            return
        time.sleep(interval)
        click.echo()


@click.command("logs")
@click.argument("name")
@NAMESPACE_OPTION
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the pod ends.")
@click.option("--replica", default="master", show_default=True, help="master, or worker-N (0-based).")
@click.option("--context", help="kubeconfig context.")
def logs(name: str, namespace: str | None, follow: bool, replica: str, context: str | None) -> None:
    """Print the training logs of one replica of run NAME."""
    import re

    if not re.fullmatch(r"master|worker-\d+", replica):
        raise UserError(f"--replica {replica!r}: expected master or worker-N")
    pod = f"{names.job_name(name)}-{replica}" + ("-0" if replica == "master" else "")
    kube = _kube(context)
    ns = _namespace(namespace)
    stream = _api_call(f"reading logs of pod {ns}/{pod}", _open_logs, kube, ns, name, pod, follow)
    for chunk in stream:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def _open_logs(kube: Any, ns: str, run: str, pod: str, follow: bool) -> Any:
    """The log stream of a replica's pod. A 404 is ambiguous (no such pod, or a pod whose node serves no
    logs, as kwok's): say which, naming the pod, and list the run's training pods when it is missing."""
    from okvqa_k8s.kube.client import ApiError

    try:
        return kube.logs(ns, pod, "pytorch", follow)
    except ApiError as exc:
        if exc.status != 404:
            raise
        found = kube.get("v1", "Pod", ns, pod)
        if found is None:
            job = names.job_name(run)
            pods = kube.list("v1", "Pod", ns, f"{names.TRAINING_JOB_LABEL}={job}")
            have = ", ".join(sorted(p["metadata"]["name"] for p in pods)) or "none"
            raise UserError(f"pod {ns}/{pod} not found (training pods of run {run}: {have})") from None
        phase = (found.get("status") or {}).get("phase", "Unknown")
        node = (found.get("spec") or {}).get("nodeName") or "no node"
        raise UserError(
            f"pod {ns}/{pod} ({phase} on {node}) has no logs to show: "
            f"the API server answered {exc.status} {exc.reason}: {exc.message}"
        ) from None


# What a run creates, in the order a user would read it; `delete` of a --no-operator run removes these.
RUN_CHILD_KINDS = (
    ("kubeflow.org/v1", "PyTorchJob"),
    ("batch/v1", "Job"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
)


@click.command("delete")
@click.argument("name")
@NAMESPACE_OPTION
@click.option("--context", help="kubeconfig context.")
def delete(name: str, namespace: str | None, context: str | None) -> None:
    """Delete run NAME; its PyTorchJob, servers and Jobs go with it.

    A FineTune's children go through the garbage collector (ownerReferences). A `submit --no-operator`
    run has no FineTune and unowned children, so those are found by the run label and deleted here.
    """
    kube = _kube(context)
    ns = _namespace(namespace)
    if _api_call(f"deleting FineTune {ns}/{name}", kube.delete, names.API_VERSION, names.KIND, ns, name):
        click.echo(f"finetune.okvqa.dev/{name} deleted")
        return
    selector = f"{names.RUN_LABEL}={name}"
    deleted = []
    for api_version, kind in RUN_CHILD_KINDS:
        for obj in _api_call(f"listing {kind}s of run {name}", kube.list, api_version, kind, ns, selector):
            child = obj["metadata"]["name"]
            if _api_call(f"deleting {kind} {ns}/{child}", kube.delete, api_version, kind, ns, child):
                deleted.append(f"{kind.lower()}/{child}")
    if not deleted:
        raise UserError(f"FineTune {ns}/{name} not found, and no objects labelled {selector}")
    click.echo(f"run {name} (no FineTune, submitted with --no-operator): deleted {', '.join(deleted)}")


@click.command("render")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="Run name (default: metadata.name or the file name).")
@click.option("-n", "--namespace", default="default", show_default=True)
@SET_OPTION
@click.option(
    "--finetune", "finetune_only", is_flag=True, help="Only the FineTune object (GitOps with operator)."
)
def render(
    spec_file: Path, name: str | None, namespace: str, overrides: tuple[str, ...], finetune_only: bool
) -> None:
    """Print the manifests of a run for kubectl/GitOps: ConfigMap, PyTorchJob, servers, evaluation Job."""
    from okvqa_k8s.kube.render import Owner, render_children, render_finetune, to_yaml
    from okvqa_k8s.spec import load_spec

    spec = load_spec(spec_file, list(overrides))
    owner = Owner(_run_name(spec_file, name), namespace)
    objs = [render_finetune(spec, owner)] if finetune_only else render_children(spec, owner)
    click.echo(to_yaml(objs), nl=False)


@click.command("crd")
@click.option("--check", is_flag=True, help="Exit non-zero when the chart's CRD differs from the spec.")
@chart_dir_option
def crd(check: bool, chart_dir: Path | None) -> None:
    """Print the FineTune CRD generated from the spec (or --check the chart's copy for drift)."""
    from okvqa_k8s.kube.crd import crd_file, crd_yaml, drift

    if check:
        problem = drift(crd_file(resolve_chart_dir(chart_dir)))
        if problem:
            raise UserError(problem)
        click.echo("CRD is up to date")
        return
    click.echo(crd_yaml(), nl=False)


@click.command("operator")
@click.option("-n", "--namespace", default=None, help="Watch only this namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (the default without -n).")
@click.option("--resync", default=15.0, show_default=True, help="Seconds between full reconciles (progress).")
@click.option("--liveness-port", default=8080, show_default=True, help="Port of /healthz (0 disables it).")
@click.option("--context", help="kubeconfig context (default: in-cluster service account, else kubeconfig).")
def operator(
    namespace: str | None, all_namespaces: bool, resync: float, liveness_port: int, context: str | None
) -> None:
    """Run the FineTune operator in this process (kopf, standalone)."""
    import logging

    from okvqa_k8s.kube.operator import run_operator

    if namespace and all_namespaces:
        raise UserError("--namespace and --all-namespaces are exclusive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    run_operator(_kube(context), namespace=namespace, resync_seconds=resync, liveness=liveness)


COMMANDS = [submit, status, logs, delete, render, crd, operator]
