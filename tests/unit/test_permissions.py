"""RBAC is narrowed per step to what its parameters name, so deploy/ grants no more."""

from remediator.actions.registry import ACTIONS


def perms(action: str, **params) -> set[str]:
    return {str(p) for p in ACTIONS[action].permissions_for(params)}


def test_a_restart_of_a_deployment_needs_deployments_only():
    assert perms("kubernetes.rollout_restart", kind="deployment", namespace="x", name="y") == {
        "apps/deployments:get (y)", "apps/deployments:patch (y)"}
    assert perms("kubernetes.rollout_restart", namespace="x", name="y") == {
        "apps/deployments:get (y)", "apps/deployments:patch (y)"}  # the default kind
    assert perms("kubernetes.scale", kind="statefulset", namespace="x", name="y", min=1, max=2) == {
        "apps/statefulsets/scale:get (y)", "apps/statefulsets/scale:patch (y)"}


def test_calls_on_the_named_object_carry_its_name_lists_do_not():
    assert perms("kubernetes.rollout_undo", namespace="x", name="web") == {
        "apps/deployments:get (web)", "apps/deployments:patch (web)", "apps/replicasets:list"}
    assert perms("kubernetes.get", resource="pods", namespace="x", name="{{ labels.pod }}") == {
        "core/pods:get ({{ labels.pod }})", "core/pods:list"}


def test_a_templated_kind_may_be_any_workload():
    assert "apps/daemonsets:patch" in perms("kubernetes.rollout_restart", kind="{{ labels.kind }}")


def test_a_snapshot_needs_only_its_resource():
    assert perms("kubernetes.get", resource="deploy", namespace="x") == {  # a list
        "apps/deployments:get", "apps/deployments:list"}
    assert "core/namespaces:list" in perms("kubernetes.get", resource="{{ labels.kind }}")


def test_evidence_written_to_a_directory_needs_no_iam():
    assert perms("evidence.bundle", directory="/var/lib/remediator/evidence") == set()
    assert perms("evidence.bundle", bucket="evidence-bucket") == {"s3:PutObject"}
