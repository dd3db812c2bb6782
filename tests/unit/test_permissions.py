"""RBAC is narrowed per step to what its parameters name, so deploy/ grants no more."""

from remediator.actions.registry import ACTIONS


def perms(action: str, **params) -> set[str]:
    return {str(p) for p in ACTIONS[action].permissions_for(params)}


def test_a_restart_of_a_deployment_needs_deployments_only():
    assert perms("kubernetes.rollout_restart", kind="deployment", namespace="x", name="y") == {
        "apps/deployments:get", "apps/deployments:patch"}
    assert perms("kubernetes.rollout_restart", namespace="x", name="y") == {
        "apps/deployments:get", "apps/deployments:patch"}  # the default kind
    assert perms("kubernetes.scale", kind="statefulset", namespace="x", name="y", min=1, max=2) == {
        "apps/statefulsets/scale:get", "apps/statefulsets/scale:patch"}


def test_a_templated_kind_may_be_any_workload():
    assert "apps/daemonsets:patch" in perms("kubernetes.rollout_restart", kind="{{ labels.kind }}")


def test_a_snapshot_needs_only_its_resource():
    assert perms("kubernetes.get", resource="deploy", namespace="x") == {
        "apps/deployments:get", "apps/deployments:list"}
    assert "core/namespaces:list" in perms("kubernetes.get", resource="{{ labels.kind }}")


def test_evidence_written_to_a_directory_needs_no_iam():
    assert perms("evidence.bundle", directory="/var/lib/remediator/evidence") == set()
    assert perms("evidence.bundle", bucket="evidence-bucket") == {"s3:PutObject"}
