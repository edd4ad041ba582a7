"""The workers' part of plan(): states built by hand (as inspect would read them), no I/O.

The files "on disk" in these states are rendered by the same functions the postinst
uses, so that "unchanged" is the real comparison it makes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from matrix_synapse_setup.core import paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.postgres import budget
from matrix_synapse_setup.postinst import plan as p
from matrix_synapse_setup.postinst import workers as run_workers
from matrix_synapse_setup.postinst.workers import Workers, WorkersOnDisk
from matrix_synapse_setup.synapse import routing, workers
from tests.unit.test_plan import LOCAL, answers, installed, state

LISTENERS = [
    {
        "port": 8008,
        "type": "http",
        "tls": False,
        "bind_addresses": ["::1", "127.0.0.1"],
        "x_forwarded": True,
        "resources": [{"names": ["client", "federation"], "compress": False}],
    }
]
HOMESERVER = Path("/etc/matrix-synapse/homeserver.yaml")
REDIS = workers.REDIS
SECRETS = ("replication-secret", "redis-secret")


def done(preset: str, count: int | None = None) -> WorkersOnDisk:
    """What a run for *preset* left on disk."""
    layout = workers.layout(preset, count, cores=2)
    files = {
        paths.WORKERS_SNIPPET: workers.render_shared(
            layout, workers.with_replication_listener(LISTENERS), REDIS.socket
        ),
        REDIS.conffile: workers.render_redis_conf(REDIS, SECRETS[1]),
    }
    for worker in layout.workers:
        files[worker.path] = workers.render_worker(worker)
    if layout.routed:
        files[paths.NGINX_INCLUDE] = routing.render_nginx(
            tuple(w.port for w in layout.routed), routing.load_patterns()
        )
    return WorkersOnDisk(
        files=files,
        secrets={
            paths.REPLICATION_SECRET: SECRETS[0] + "\n",
            paths.REDIS_SECRET: SECRETS[1] + "\n",
        },
        enabled=layout.names(),
        redis_enabled=True,
        target_enabled=True,
    )


def with_workers(preset: str, count: str = "", disk: WorkersOnDisk | None = None, **changes):
    given = dict(
        workers=(preset, count),
        cores=2,
        workers_on_disk=disk if disk is not None else WorkersOnDisk(),
        listeners=(LISTENERS, HOMESERVER),
        redis=REDIS,
        fresh_secrets=("fresh-replication", "fresh-redis"),
    )
    return state(**(given | changes))


def the_step(plan: p.Plan) -> Workers:
    (step,) = plan.of(Workers)
    return step


def test_no_workers_and_nothing_of_ours_is_unchanged():
    plan = p.plan(with_workers("none"))
    assert not plan and plan.database_unchanged


def test_the_client_preset_writes_every_file_and_makes_the_secrets():
    step = the_step(p.plan(with_workers("client", "2")))
    written = {path for path, _, _ in step.install}
    assert written == {
        paths.WORKERS_SNIPPET,
        REDIS.conffile,
        paths.WORKERS_DIR / "client1.yaml",
        paths.WORKERS_DIR / "client2.yaml",
        paths.WORKERS_DIR / "events1.yaml",
        paths.NGINX_INCLUDE,
    }
    assert {path for path, _ in step.secrets} == {paths.REPLICATION_SECRET, paths.REDIS_SECRET}
    assert step.remove == ()
    # Only the hash of the new Redis password is in Redis's file.
    redis_text = dict((path, text) for path, text, _ in step.install)[REDIS.conffile]
    assert "fresh-redis" not in redis_text
    assert workers.password_hash("fresh-redis") in redis_text
    # Owners: the shared snippet as the database snippet, Redis's for its group.
    kinds = {path: kind for path, _, kind in step.install}
    assert kinds[paths.WORKERS_SNIPPET] == run_workers.SYNAPSE_READS
    assert kinds[REDIS.conffile] == run_workers.REDIS_READS
    assert kinds[paths.NGINX_INCLUDE] == run_workers.PUBLIC


def test_a_second_run_with_the_same_answers_changes_nothing():
    plan = p.plan(with_workers("client", "2", done("client", 2)))
    assert not plan and plan.database_unchanged


def test_existing_secrets_are_kept():
    disk = done("client", 1)._replace(files={})
    step = the_step(p.plan(with_workers("client", "1", disk)))
    assert step.secrets == ()
    redis_text = dict((path, text) for path, text, _ in step.install)[REDIS.conffile]
    assert workers.password_hash(SECRETS[1]) in redis_text


def test_fewer_client_workers_remove_the_extra_file_only():
    step = the_step(p.plan(with_workers("client", "1", done("client", 2))))
    assert step.remove == (paths.WORKERS_DIR / "client2.yaml",)
    assert {path for path, _, _ in step.install} == {paths.WORKERS_SNIPPET, paths.NGINX_INCLUDE}


def test_none_again_removes_every_file_of_ours_but_empties_the_nginx_include():
    disk = done("client", 1)
    step = the_step(p.plan(with_workers("none", "", disk)))
    assert step.layout is None
    # An admin's server block may include it: it stays, and routes nothing.
    ((path, text, _),) = step.install
    assert path == paths.NGINX_INCLUDE and "location" not in text
    assert set(step.remove) == (set(disk.files) | set(disk.secrets)) - {paths.NGINX_INCLUDE}
    # Once done, none again changes nothing.
    after = WorkersOnDisk(files={paths.NGINX_INCLUDE: text})
    assert not p.plan(with_workers("none", "", after))


def test_the_federation_preset_has_no_nginx_include():
    step = the_step(p.plan(with_workers("federation")))
    written = {path for path, _, _ in step.install}
    assert paths.NGINX_INCLUDE not in written
    assert paths.WORKERS_DIR / "federation_sender1.yaml" in written
    assert paths.WORKERS_DIR / "background1.yaml" in written


def test_switching_presets_removes_the_old_workers():
    step = the_step(p.plan(with_workers("federation", "", done("client", 1))))
    assert set(step.remove) == {
        paths.WORKERS_DIR / "client1.yaml",
        paths.WORKERS_DIR / "events1.yaml",
    }
    include = dict((path, text) for path, text, _ in step.install)[paths.NGINX_INCLUDE]
    assert "federation" in include and "location" not in include


def test_a_unit_not_enabled_is_a_step_even_when_the_files_are_right():
    disk = done("client", 1)._replace(target_enabled=False)
    step = the_step(p.plan(with_workers("client", "1", disk)))
    assert step.install == () and step.remove == ()


def test_workers_without_redis_are_refused_before_anything():
    with pytest.raises(SetupError, match="Redis"):
        p.plan(with_workers("client", "1", redis=None))


def test_listeners_set_after_our_snippet_are_refused():
    later = paths.SYNAPSE_CONFD / "zz-listeners.yaml"
    with pytest.raises(SetupError, match="zz-listeners.yaml"):
        p.plan(with_workers("client", "1", listeners=(LISTENERS, later)))


def test_a_remote_server_with_too_few_connections_is_refused_with_the_numbers():
    remote = dict(
        answers=answers(host="db.example.org", password="pw", sslmode="require"),
        on_disk=installed(LOCAL)._replace(text=None, values=None),
        cluster=None,
        proof=None,
        server_limits=budget.Limits(max_connections=20, superuser_reserved=3),
    )
    with pytest.raises(SetupError) as err:
        p.plan(with_workers("client", "1", **remote))
    message = str(err.value)
    assert "max_connections 20" in message
    assert re.search(r"\b30\b", message)  # three processes of 10
    # Enough connections: the same answers go through.
    remote["server_limits"] = budget.Limits(max_connections=100, superuser_reserved=3)
    assert the_step(p.plan(with_workers("client", "1", **remote)))


def test_the_local_cluster_is_given_the_connections_the_pools_need():
    assert p.max_connections(with_workers("client", "1")) == 100  # 30 fit in Debian's 100
    many = with_workers("client", "16")  # 18 processes of 10
    assert p.max_connections(many) == 180 + 3 + budget.MARGIN


def test_the_pool_size_is_the_database_snippets():
    template = Path(paths.__file__).parent.parent / "files" / "templates" / "database.yaml.j2"
    assert f"cp_max: {run_workers.POOL_SIZE}\n" in template.read_text(encoding="utf-8")


def test_without_synapses_configuration_the_workers_wait_for_it():
    plan = p.plan(with_workers("client", "1", homeserver_exists=False))
    assert plan.of(Workers) == []
    assert any("Synapse is not installed yet" in note for note in plan.notes)


def test_workers_need_the_synapse_their_unit_runs():
    with pytest.raises(SetupError, match="matrix-synapse-py3"):
        p.plan(with_workers("client", "1", worker_python=False))


def test_the_interpreter_checked_is_the_one_the_worker_unit_runs():
    from matrix_synapse_setup.synapse import units

    unit = Path(__file__).parents[2] / "debian" / "systemd" / "matrix-synapse-worker@.service"
    (execstart,) = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    assert execstart.split("=", 1)[1].split()[0] == str(units.WORKER_PYTHON)
