"""Every permission the operator and the server are granted is used: nothing beyond what the code calls.

The control plane audits every ServiceAccount request (tests/harness/controlplane.py). This module
runs last (its name sorts last) and reads what the operator's ServiceAccounts did during the whole
integration suite: each (group, resource, verb) of their rules must appear with a success,
and no request of theirs may have been forbidden. Permissions that only a path the suite cannot
take here exercises are listed in EXERCISED_ELSEWHERE, each with where it is used.

It audits a whole run: in a run that leaves out (or deselects) any module that talks to the control
plane, it is skipped with the reason, so a developer's `pytest -k ...` is green when the code is.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from modelexpress_operator.rbac import (
    CACHE_JOB_RULES,
    OPERATOR_OWN_NAMESPACE_RULES,
    OPERATOR_RULES,
    SERVER_RULES,
    SERVER_TOKEN_REVIEW_RULES,
    WORKER_PEER_AUTH_RULES,
    WORKER_RULES,
)
from tests.harness.controlplane import ControlPlane

pytestmark = pytest.mark.k8s
OPERATOR_USER = re.compile(r"^system:serviceaccount:[^:]+:(modelexpress-operator|rel-[a-z0-9-]+-operator)$")
SERVER_USER = re.compile(r"^system:serviceaccount:[^:]+:mx-server$")
# "reader" is the worker identity whose writes test_modelmetadata_sources expects to be refused.
WORKER_USER = re.compile(r"^system:serviceaccount:[^:]+:(mx-worker|reader)$")
CACHE_JOB_USER = re.compile(r"^system:serviceaccount:[^:]+:modelexpress-cache-job$")
EXERCISED_ELSEWHERE = {
    ("kopf.dev", "clusterkopfpeerings", verb): "cluster-wide peering (chart default scope with replicas > 1)"
    for verb in ("get", "list", "watch", "patch")
} | {
    (
        "",
        "secrets",
        "update",
    ): "renewing the webhook certificate (webhook/serving.py; tests/unit/test_webhook_logic.py)",
    # The workers' documented contract is get/list/watch; the registry itself lists and watches, and
    # `get` serves reads of one named ModelMetadata (kubectl with the worker's identity).
    ("modelexpress.io", "modelmetadatas", "get"): "one-object reads under the workers' get/list/watch contract",
    ("modelexpress.io", "modelsourceslices", "get"): "one-object reads under the workers' get/list/watch contract",
}


def _control_plane_modules() -> set[str]:
    """Integration modules whose tests talk to the control plane (and so exercise the grants)."""
    here = Path(__file__)
    return {
        path.name
        for path in here.parent.glob("test_*.py")
        if path != here and ("control_plane" in (text := path.read_text()) or "pytest.mark.k8s" in text)
    }


@pytest.fixture(autouse=True)
def _whole_run_only(request: pytest.FixtureRequest) -> None:
    session = request.session
    ran = {Path(str(item.path)).name for item in session.items}
    missing = sorted(_control_plane_modules() - ran)
    if missing or getattr(session.config, "_mx_deselected", False):
        left_out = ", ".join(missing) if missing else "tests deselected with -k/-m"
        pytest.skip(f"audits a whole integration run; this run left out {left_out}")


@pytest.mark.parametrize(
    ("who", "user", "rules", "refusals_expected"),
    [
        ("operator", OPERATOR_USER, OPERATOR_RULES + OPERATOR_OWN_NAMESPACE_RULES, False),
        ("server", SERVER_USER, SERVER_RULES + SERVER_TOKEN_REVIEW_RULES, False),
        ("worker", WORKER_USER, WORKER_RULES + WORKER_PEER_AUTH_RULES, True),
        ("cache job", CACHE_JOB_USER, CACHE_JOB_RULES, False),
    ],
)
def test_every_permission_is_used_and_none_is_missing(
    control_plane: ControlPlane,
    who: str,
    user: re.Pattern[str],
    rules: list[dict[str, object]],
    refusals_expected: bool,
) -> None:
    used: Counter[tuple[str, str, str]] = Counter()
    forbidden: list[str] = []
    for line in control_plane.audit_log.read_text().splitlines():
        event = json.loads(line)
        if not user.match(event.get("user", {}).get("username", "")):
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        key = (ref.get("apiGroup", ""), resource, event["verb"])
        code = (event.get("responseStatus") or {}).get("code", 200)
        # RBAC's own verdict; a 403 that authorization allowed came from admission (an exceeded
        # ResourceQuota a test sets up on purpose), not from a missing rule
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        if decision == "forbid" or (decision is None and code == 403):
            forbidden.append(f"{key}: {event.get('requestURI')}")
        elif code < 500:
            used[key] += 1
    if not used:
        pytest.fail(f"no {who} requests were audited: this test reads what the rest of the integration suite did")
    assert refusals_expected or not forbidden, f"the {who} was refused (a rule is missing): {forbidden[:10]}"
    unused = [
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not used[(group, resource, verb)] and (group, resource, verb) not in EXERCISED_ELSEWHERE
    ]
    assert not unused, (
        f"granted but never used by the {who} in this run: {unused}. In a run of the whole integration "
        "suite this means a rule to remove (or a path to test); in a partial run, the modules that "
        "exercise them did not run"
    )
