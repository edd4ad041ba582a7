"""PostgreSQL settings for Synapse: the sizes, the drop-in's text, finding the cluster,
this machine's memory and storage, writing and removing the drop-in."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from matrix_synapse_setup.postgres import tuning

GiB = 1024**3
MiB = 1024**2
SIZE = re.compile(r"^[1-9][0-9]*(MB|GB)$")


def to_bytes(value: str) -> int:
    number, unit = int(value[:-2]), value[-2:]
    return number * {"MB": MiB, "GB": GiB}[unit]


# --- recommended() -----------------------------------------------------------------

EXPECTED = {
    # memory: shared_buffers, effective_cache_size, maintenance_work_mem, work_mem
    1 * GiB: ("256MB", "768MB", "64MB", "4MB"),
    4 * GiB: ("1GB", "3GB", "256MB", "10MB"),
    24 * GiB: ("6GB", "18GB", "1GB", "61MB"),
    256 * GiB: ("8GB", "192GB", "1GB", "64MB"),
}


@pytest.mark.parametrize("memory", sorted(EXPECTED))
@pytest.mark.parametrize("rotational", [False, True, None])
def test_recommended_sizes(memory, rotational):
    values = tuning.recommended(memory, 4, rotational)
    shared, cache, maintenance, work = EXPECTED[memory]
    assert values["shared_buffers"] == shared
    assert values["effective_cache_size"] == cache
    assert values["maintenance_work_mem"] == maintenance
    assert values["work_mem"] == work
    assert values["wal_buffers"] == "16MB"
    assert values["min_wal_size"] == "1GB"
    assert values["max_wal_size"] == "4GB"
    assert values["checkpoint_completion_target"] == "0.9"
    assert values["default_statistics_target"] == "100"
    assert values["jit"] == "off"
    if rotational is True:
        assert (values["random_page_cost"], values["effective_io_concurrency"]) == ("4", "2")
    else:  # SSD, or unknown: servers today have SSDs
        assert (values["random_page_cost"], values["effective_io_concurrency"]) == ("1.1", "200")


@pytest.mark.parametrize("memory", [256 * MiB, 1 * GiB, 3 * GiB + 123456789, 24 * GiB, 1024 * GiB])
def test_recommended_is_bounded_and_never_touches_durability(memory):
    values = tuning.recommended(memory, 2, None)
    assert not {"fsync", "full_page_writes", "synchronous_commit"} & values.keys()
    sizes = ("shared_buffers", "effective_cache_size", "maintenance_work_mem", "work_mem")
    for name in sizes:
        assert SIZE.match(values[name]), (name, values[name])
    shared = to_bytes(values["shared_buffers"])
    assert 128 * MiB <= shared <= 8 * GiB
    assert shared <= max(memory // 4, 128 * MiB)
    assert 64 * MiB <= to_bytes(values["maintenance_work_mem"]) <= GiB
    assert 4 * MiB <= to_bytes(values["work_mem"]) <= 64 * MiB
    assert to_bytes(values["effective_cache_size"]) <= memory * 3 // 4
    # 100 connections doing 3 sorts each, on top of shared_buffers: within memory
    # (unless the 4MB floor must win on a tiny machine).
    if memory >= 2 * GiB:
        assert shared + 300 * to_bytes(values["work_mem"]) <= memory


def test_recommended_on_a_machine_like_this_one():
    # 24 GiB as the kernel reports it (a bit less than the nominal size), 2 cores.
    values = tuning.recommended(25276063744, 2, None)
    assert values["shared_buffers"] == "6026MB"
    assert values["effective_cache_size"] == "18078MB"
    assert values["work_mem"] == "60MB"
    assert values["max_parallel_workers_per_gather"] == "1"
    assert values["max_parallel_workers"] == "2"


@pytest.mark.parametrize("max_connections", [None, 0, 50, 100])
def test_max_connections_is_written_only_above_debians_100(max_connections):
    values = tuning.recommended(4 * GiB, 2, False, max_connections=max_connections)
    assert values == tuning.recommended(4 * GiB, 2, False)
    assert "max_connections" not in values
    assert values["work_mem"] == "10MB"  # sized for 100


@pytest.mark.parametrize(
    ("memory", "max_connections", "work_mem"),
    [
        (4 * GiB, 101, "10MB"),
        (4 * GiB, 150, "6MB"),  # (4 GiB - 1 GiB) / 450
        (24 * GiB, 200, "30MB"),  # (24 - 6) GiB / 600
        (1 * GiB, 300, "4MB"),  # the floor
    ],
)
def test_a_budget_above_100_is_written_and_sizes_work_mem(memory, max_connections, work_mem):
    values = tuning.recommended(memory, 2, False, max_connections=max_connections)
    assert values["max_connections"] == str(max_connections)
    assert values["work_mem"] == work_mem
    plain = tuning.recommended(memory, 2, False)
    # shared_buffers is a quarter of memory whatever the connections
    assert values["shared_buffers"] == plain["shared_buffers"]
    assert {k: v for k, v in values.items() if k not in ("max_connections", "work_mem")} == {
        k: v for k, v in plain.items() if k != "work_mem"
    }
    if memory >= 2 * GiB:  # every connection's 3 sorts still fit beside shared_buffers
        shared = to_bytes(values["shared_buffers"])
        assert shared + 3 * max_connections * to_bytes(work_mem) <= memory
    text = tuning.render(values, memory=memory, rotational=False)
    assert f"max_connections = '{max_connections}'" in text.splitlines()
    assert tuning.dropin_max_connections(text) == max_connections


def test_dropin_max_connections_reads_only_a_number():
    assert tuning.dropin_max_connections(TEXT) is None
    assert tuning.dropin_max_connections(None) is None
    assert tuning.dropin_max_connections("max_connections = 'lots'\n") is None
    assert tuning.dropin_max_connections("max_connections = 120\n") == 120


@pytest.mark.parametrize(
    ("cores", "per_gather", "workers"),
    [(1, "1", "1"), (2, "1", "2"), (8, "4", "8"), (64, "4", "8")],
)
def test_parallel_workers_follow_the_cores(cores, per_gather, workers):
    values = tuning.recommended(8 * GiB, cores, False)
    assert values["max_parallel_workers_per_gather"] == per_gather
    assert values["max_parallel_maintenance_workers"] == per_gather
    assert values["max_parallel_workers"] == workers


def test_every_rule_has_a_reason_and_a_distinct_name():
    names = [rule.name for rule in tuning.RULES]
    assert len(names) == len(set(names))
    assert all(rule.reason and "\n" not in rule.reason for rule in tuning.RULES)


@pytest.mark.parametrize(
    ("value", "text"), [(6 * GiB, "6GB"), (6 * GiB + MiB, "6145MB"), (768 * MiB + 5, "768MB")]
)
def test_size_is_whole_mb_or_gb(value, text):
    assert tuning.size(value) == text


# --- render() and parse_conf() ----------------------------------------------------------


@pytest.mark.parametrize("memory", sorted(EXPECTED))
@pytest.mark.parametrize("rotational", [False, True, None])
def test_render_round_trips(memory, rotational):
    values = tuning.recommended(memory, 2, rotational)
    text = tuning.render(values, memory=memory, rotational=rotational)
    assert tuning.parse_conf(text) == values
    settings = [line.split(" = ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert settings == sorted(values)
    assert text.startswith("# Managed by matrix-synapse-setup")
    assert "dpkg-reconfigure matrix-synapse-setup" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_render_names_memory_and_storage():
    assert "memory 24.0 GiB, storage rotating disk" in tuning.render(
        {}, memory=24 * GiB, rotational=True
    )
    assert "memory 512 MiB, storage SSD" in tuning.render({}, memory=512 * MiB, rotational=False)
    assert "storage unknown" in tuning.render({}, memory=GiB, rotational=None)


@pytest.mark.parametrize("value", ["it's", "back\\slash", "'';--", "a b # not a comment", ""])
def test_render_quotes_as_postgresql_reads(value):
    text = tuning.render({"application_name": value}, memory=GiB, rotational=None)
    assert tuning.parse_conf(text) == {"application_name": value}


def test_render_refuses_durability_settings_and_odd_names():
    for name in ("fsync", "synchronous_commit", "FULL_PAGE_WRITES", "bad name", "x\ny", "jit\n"):
        with pytest.raises(ValueError):
            tuning.render({name: "off"}, memory=GiB, rotational=None)
    with pytest.raises(ValueError):
        tuning.render({"work_mem": "4MB\nfsync = off"}, memory=GiB, rotational=None)


def test_parse_conf_reads_postgresql_conf_syntax():
    text = (
        "# a comment\n"
        "port = 5432\t\t# (change requires restart)\n"
        "#port = 9999\n"
        "Shared_Buffers 256MB\n"
        "data_directory = '/var/lib/postgresql/15/main'  # use data in another directory\n"
        "log_line_prefix = '%m [%p] it''s \\\\ here'\n"
        "port=5433\n"
        "garbage line that PostgreSQL would refuse = =\n"
    )
    assert tuning.parse_conf(text) == {
        "port": "5433",
        "shared_buffers": "256MB",
        "data_directory": "/var/lib/postgresql/15/main",
        "log_line_prefix": "%m [%p] it's \\ here",
    }


# --- cluster_for_port() --------------------------------------------------------------------


def make_cluster(etc: Path, version: str, name: str, conf: str, **dropins: str) -> Path:
    confdir = etc / version / name
    (confdir / "conf.d").mkdir(parents=True)
    (confdir / "postgresql.conf").write_text(conf)
    for filename, text in dropins.items():
        (confdir / "conf.d" / filename).write_text(text)
    return confdir


def debian_conf(port: int, data: Path, *, include: bool = True) -> str:
    return (
        f"data_directory = '{data}'\n"
        f"port = {port}\t\t\t\t# (change requires restart)\n"
        "shared_buffers = 128MB\n"
        "unix_socket_directories = '/var/run/postgresql'\n"
        + (
            "include_dir = 'conf.d'\t\t\t# include files ending in '.conf' from\n"
            if include
            else ""
        )
    )


def test_cluster_for_port_reads_debian_layout_and_conf_d(tmp_path):
    etc = tmp_path / "etc"
    data = tmp_path / "data"
    make_cluster(etc, "15", "main", debian_conf(5432, data / "15"))
    # 16/main says 5433 in postgresql.conf, but a conf.d file moves it to 5434.
    make_cluster(
        etc,
        "16",
        "main",
        debian_conf(5433, data / "16"),
        **{"port.conf": "port = 5434\n", ".hidden.conf": "port = 1\n", "x.conf.off": "port = 2\n"},
    )
    # Without include_dir, conf.d is not read: this one stays on 5435.
    make_cluster(
        etc,
        "16",
        "noinc",
        debian_conf(5435, data / "noinc", include=False),
        **{"p.conf": "port = 5436\n"},
    )
    # Two files in conf.d: the later name wins.
    make_cluster(
        etc,
        "17",
        "two",
        debian_conf(5437, data / "two"),
        **{"a.conf": "port=6000\n", "b.conf": "port=6001\n"},
    )

    c15 = tuning.cluster_for_port(5432, etc)
    assert (c15.version, c15.name, c15.port) == ("15", "main", 5432)
    assert c15.confdir == etc / "15" / "main"
    assert c15.data_directory == data / "15"
    assert c15.includes_conf_d
    assert c15.dropin == etc / "15" / "main" / "conf.d" / tuning.DROPIN_NAME
    assert c15.socket_dir == "/var/run/postgresql"

    assert tuning.cluster_for_port(5433, etc) is None
    c16 = tuning.cluster_for_port(5434, etc)
    assert (c16.version, c16.name) == ("16", "main")

    noinc = tuning.cluster_for_port(5435, etc)
    assert (noinc.name, noinc.includes_conf_d) == ("noinc", False)
    assert tuning.cluster_for_port(5436, etc) is None

    assert tuning.cluster_for_port(6000, etc) is None
    assert tuning.cluster_for_port(6001, etc).name == "two"
    assert tuning.cluster_for_port(1, etc) is None
    assert tuning.cluster_for_port(2, etc) is None


def test_cluster_for_port_defaults_and_alter_system(tmp_path):
    etc = tmp_path / "etc"
    # No port line: 5432; no data_directory: Debian's path.
    make_cluster(etc, "15", "bare", "include_dir = 'conf.d'\n")
    bare = tuning.cluster_for_port(5432, etc)
    assert bare.data_directory == Path("/var/lib/postgresql/15/bare")
    # ALTER SYSTEM SET port: postgresql.auto.conf in the data directory, read last.
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgresql.auto.conf").write_text("# Do not edit this file manually!\nport = '5999'\n")
    make_cluster(etc, "16", "auto", debian_conf(5440, data), **{"p.conf": "port = 5441\n"})
    assert tuning.cluster_for_port(5999, etc).name == "auto"
    assert tuning.cluster_for_port(5441, etc) is None
    assert tuning.cluster_for_port(5432, etc).name == "bare"
    assert tuning.cluster_for_port(5432, tmp_path / "nothing") is None


def test_include_dir_elsewhere_is_not_conf_d(tmp_path):
    etc = tmp_path / "etc"
    make_cluster(etc, "15", "main", "port = 5432\ninclude_dir = '/somewhere/else'\n")
    assert tuning.cluster_for_port(5432, etc).includes_conf_d is False
    make_cluster(
        etc, "16", "abs", f"port = 5433\ninclude_dir = '{etc / '16' / 'abs' / 'conf.d'}'\n"
    )
    assert tuning.cluster_for_port(5433, etc).includes_conf_d is True


# --- machine_memory() ---------------------------------------------------------------------


def fake_proc(tmp_path: Path, memtotal_kb: int, cgroup_lines: str) -> tuple[Path, Path, Path]:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       {memtotal_kb} kB\nMemFree:         1000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(cgroup_lines)
    root = tmp_path / "sys-fs-cgroup"
    root.mkdir()
    return meminfo, cgroup, root


def test_machine_memory_is_memtotal_without_a_limit(tmp_path):
    meminfo, cgroup, root = fake_proc(tmp_path, 24 * 1024 * 1024, "0::/system.slice/x.service\n")
    (root / "system.slice" / "x.service").mkdir(parents=True)
    (root / "system.slice" / "x.service" / "memory.max").write_text("max\n")
    assert tuning.machine_memory(meminfo, cgroup, root) == 24 * GiB


def test_machine_memory_takes_the_cgroup_v2_limit(tmp_path):
    meminfo, cgroup, root = fake_proc(tmp_path, 24 * 1024 * 1024, "0::/lxc/box/init.scope\n")
    (root / "lxc" / "box" / "init.scope").mkdir(parents=True)
    (root / "lxc" / "box" / "init.scope" / "memory.max").write_text("max\n")
    (root / "lxc" / "box" / "memory.max").write_text(f"{2 * GiB}\n")  # the container's limit
    (root / "lxc" / "memory.max").write_text(f"{8 * GiB}\n")
    assert tuning.machine_memory(meminfo, cgroup, root) == 2 * GiB


def test_machine_memory_takes_a_limit_of_our_own_cgroup(tmp_path):
    meminfo, cgroup, root = fake_proc(tmp_path, 4 * 1024 * 1024, "0::/\n")
    (root / "memory.max").write_text(f"{GiB}\n")  # a cgroup namespace: we see our root
    assert tuning.machine_memory(meminfo, cgroup, root) == GiB


def test_machine_memory_limit_above_memtotal_counts_for_nothing(tmp_path):
    meminfo, cgroup, root = fake_proc(tmp_path, 1024 * 1024, "0::/a\n")
    (root / "a").mkdir()
    (root / "a" / "memory.max").write_text(f"{64 * GiB}\n")
    assert tuning.machine_memory(meminfo, cgroup, root) == GiB


def test_machine_memory_on_a_cgroup_v1_hybrid(tmp_path):
    lines = "9:name=systemd:/\n4:memory:/docker/abc\n0::/\n"
    meminfo, cgroup, root = fake_proc(tmp_path, 24 * 1024 * 1024, lines)
    (root / "memory" / "docker" / "abc").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # none
    (root / "memory" / "docker" / "abc" / "memory.limit_in_bytes").write_text(f"{3 * GiB}\n")
    assert tuning.machine_memory(meminfo, cgroup, root) == 3 * GiB


def test_machine_memory_of_this_machine_is_plausible():
    memory = tuning.machine_memory()
    assert 64 * MiB < memory <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") + MiB


# --- rotational() ------------------------------------------------------------------------


def fake_disk(sysfs: Path, devpath: str, majmin: str, rotational: str, driver: str = "sd") -> Path:
    """A disk under sysfs/devices/DEVPATH with queue/rotational, linked from dev/block."""
    disk = sysfs / "devices" / devpath
    (disk / "queue").mkdir(parents=True)
    (disk / "queue" / "rotational").write_text(rotational + "\n")
    (sysfs / "bus" / driver).mkdir(parents=True, exist_ok=True)
    (disk / "device").mkdir()
    (disk / "device" / "driver").symlink_to(sysfs / "bus" / driver)
    link(sysfs, majmin, disk)
    (sysfs / "class" / "block").mkdir(parents=True, exist_ok=True)
    (sysfs / "class" / "block" / disk.name).symlink_to(disk)
    return disk


def link(sysfs: Path, majmin: str, target: Path) -> None:
    (sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
    (sysfs / "dev" / "block" / majmin).symlink_to(target)


def fake_partition(sysfs: Path, disk: Path, name: str, majmin: str) -> None:
    part = disk / name
    part.mkdir()
    (part / "partition").write_text("1\n")
    link(sysfs, majmin, part)
    (sysfs / "class" / "block" / name).symlink_to(part)


def test_rotational_of_disks_and_partitions(tmp_path):
    sysfs = tmp_path / "sys"
    hdd = fake_disk(sysfs, "pci0/ata1/block/sda", "8:0", "1")
    ssd = fake_disk(sysfs, "pci0/nvme/block/nvme0n1", "259:0", "0", driver="nvme")
    fake_partition(sysfs, hdd, "sda1", "8:1")
    fake_partition(sysfs, ssd, "nvme0n1p2", "259:2")
    assert tuning.block_rotational(8, 0, sysfs) is True
    assert tuning.block_rotational(8, 1, sysfs) is True
    assert tuning.block_rotational(259, 0, sysfs) is False
    assert tuning.block_rotational(259, 2, sysfs) is False
    assert tuning.block_rotational(7, 0, sysfs) is None  # no such device


def test_rotational_unknown_for_virtio_and_virtual_devices(tmp_path):
    sysfs = tmp_path / "sys"
    fake_disk(sysfs, "pci0/virtio1/block/vda", "254:0", "1", driver="virtio_blk")
    fake_disk(sysfs, "pci0/virtio2/block/vdb", "254:16", "0", driver="virtio_blk")
    fake_disk(sysfs, "virtual/block/loop0", "7:0", "1")
    assert tuning.block_rotational(254, 0, sysfs) is None  # Linux's guess, not the host's
    assert tuning.block_rotational(254, 16, sysfs) is False  # the host said SSD
    assert tuning.block_rotational(7, 0, sysfs) is None


def test_rotational_of_device_mapper_follows_its_members(tmp_path):
    sysfs = tmp_path / "sys"
    fake_disk(sysfs, "pci0/ata1/block/sda", "8:0", "1")
    fake_disk(sysfs, "pci0/nvme/block/nvme0n1", "259:0", "0", driver="nvme")
    fake_disk(sysfs, "pci0/nvme/block/nvme1n1", "259:1", "0", driver="nvme")
    for name, majmin, members in (
        ("dm-0", "253:0", ["nvme0n1", "nvme1n1"]),
        ("dm-1", "253:1", ["nvme0n1", "sda"]),
    ):
        dm = fake_disk(sysfs, f"virtual/block/{name}", majmin, "1")
        (dm / "slaves").mkdir()
        for member in members:
            (dm / "slaves" / member).symlink_to(sysfs / "class" / "block" / member)
    assert tuning.block_rotational(253, 0, sysfs) is False
    assert tuning.block_rotational(253, 1, sysfs) is True


def test_rotational_of_a_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    st = data.stat()
    majmin = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sysfs = tmp_path / "sys"
    assert tuning.rotational(data, sysfs=sysfs, mountinfo=tmp_path / "none") is None
    fake_disk(sysfs, "pci0/ata1/block/sdz", majmin, "1")
    assert tuning.rotational(data, sysfs=sysfs) is True
    assert tuning.rotational(tmp_path / "missing", sysfs=sysfs) is None


def test_rotational_through_the_mount_source(tmp_path):
    # btrfs: the directory's st_dev is anonymous (0:N); the mount's source is a disk.
    data = tmp_path / "data"
    data.mkdir()
    sysfs = tmp_path / "sys"
    null = os.stat("/dev/null").st_rdev  # a device node that exists everywhere
    fake_disk(sysfs, "pci0/ata1/block/sdy", f"{os.major(null)}:{os.minor(null)}", "0")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        f"30 1 0:40 / {tmp_path} rw,relatime shared:1 - btrfs /dev/null rw\n"
    )
    st = data.stat()
    if (sysfs / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}").exists():
        pytest.skip("this directory's device is /dev/null's: cannot fake the fallback")
    assert tuning.rotational(data, sysfs=sysfs, mountinfo=mountinfo) is False


# --- ensure() and remove() ----------------------------------------------------------------


def a_cluster(tmp_path: Path, *, include: bool = True, owner: tuple[int, int] = (0, 0)):
    confdir = make_cluster(
        tmp_path / "etc", "15", "main", debian_conf(5432, tmp_path / "data", include=include)
    )
    os.chown(confdir / "postgresql.conf", *owner)
    return tuning.cluster_for_port(5432, tmp_path / "etc")


TEXT = tuning.render(tuning.recommended(4 * GiB, 2, False), memory=4 * GiB, rotational=False)


def test_ensure_writes_changes_and_keeps(tmp_path):
    cluster = a_cluster(tmp_path)
    step = tuning.ensure(cluster.dropin, TEXT)
    assert step.outcome == "created"
    assert cluster.dropin.read_text() == TEXT
    assert stat.S_IMODE(cluster.dropin.stat().st_mode) == 0o644
    inode = cluster.dropin.stat().st_ino
    assert tuning.ensure(cluster.dropin, TEXT).outcome == "unchanged"
    assert cluster.dropin.stat().st_ino == inode  # not rewritten
    other = TEXT.replace("work_mem = '10MB'", "work_mem = '11MB'")
    assert other != TEXT
    (cluster.dropin.parent / f".{tuning.DROPIN_NAME}.abc.tmp").write_text("half")
    assert tuning.ensure(cluster.dropin, other).outcome == "changed"
    assert cluster.dropin.read_text() == other
    assert [p.name for p in cluster.dropin.parent.iterdir()] == [tuning.DROPIN_NAME]


def test_current_tells_whether_ensure_or_remove_would_change_anything(tmp_path):
    cluster = a_cluster(tmp_path)
    assert tuning.current(cluster, wanted=False)
    assert not tuning.current(cluster, wanted=True)
    tuning.ensure(cluster.dropin, tuning.text_for(cluster))
    assert tuning.current(cluster, wanted=True)
    assert not tuning.current(cluster, wanted=False)
    cluster.dropin.write_text(tuning.text_for(cluster).replace("jit = 'off'", "jit = 'on'"))
    assert not tuning.current(cluster, wanted=True)


def test_text_for_and_current_follow_the_budgets_max_connections(tmp_path):
    cluster = a_cluster(tmp_path)
    plain = tuning.text_for(cluster)
    assert tuning.text_for(cluster, None) == tuning.text_for(cluster, 100) == plain
    more = tuning.text_for(cluster, 140)
    assert "max_connections = '140'" in more.splitlines()
    tuning.ensure(cluster.dropin, more)
    assert tuning.current(cluster, wanted=True, max_connections=140)
    assert not tuning.current(cluster, wanted=True)  # fewer processes now: back to 100
    assert not tuning.current(cluster, wanted=True, max_connections=150)


@pytest.mark.parametrize("where", ["postgresql.conf", "conf.d", "postgresql.auto.conf"])
def test_a_higher_max_connections_of_the_admins_is_never_lowered(tmp_path, where):
    cluster = a_cluster(tmp_path)
    assert tuning.configured_max_connections(cluster) is None
    line = "max_connections = 300\n"
    if where == "postgresql.conf":
        with cluster.conffile.open("a") as conf:
            conf.write(line)
    elif where == "conf.d":
        (cluster.dropin.parent / "50-local.conf").write_text(line)
    else:
        cluster.data_directory.mkdir(parents=True, exist_ok=True)
        (cluster.data_directory / "postgresql.auto.conf").write_text(line)
    # Ours, from an earlier run, does not count as the admin's.
    tuning.ensure(cluster.dropin, tuning.text_for(cluster, 500))
    assert tuning.configured_max_connections(cluster) == 300
    assert "max_connections" not in tuning.parse_conf(tuning.text_for(cluster, 300))
    assert tuning.text_for(cluster, 300) == tuning.text_for(cluster)
    assert "max_connections = '301'" in tuning.text_for(cluster, 301).splitlines()


def test_a_cluster_that_does_not_read_conf_d_is_current_either_way(tmp_path):
    cluster = a_cluster(tmp_path, include=False)
    assert not cluster.includes_conf_d
    assert tuning.current(cluster, wanted=True)


def test_remove(tmp_path):
    cluster = a_cluster(tmp_path)
    tuning.ensure(cluster.dropin, TEXT)
    theirs = cluster.dropin.parent / "50-local.conf"
    theirs.write_text("work_mem = '8MB'\n")
    (cluster.dropin.parent / f".{tuning.DROPIN_NAME}.abc.tmp").write_text("half")
    assert tuning.remove(cluster.dropin).outcome == "changed"
    assert sorted(p.name for p in cluster.dropin.parent.iterdir()) == ["50-local.conf"]
    assert tuning.remove(cluster.dropin).outcome == "unchanged"


def test_our_file_sorts_before_an_admins_files():
    for theirs in ("10-local.conf", "50-tuning.conf", "custom.conf", "Zzz.conf", "01.conf"):
        assert sorted([theirs, tuning.DROPIN_NAME], key=str.encode)[0] == tuning.DROPIN_NAME


def test_tuning_stays_import_light(fresh_python):
    code = (
        "import sys, matrix_synapse_setup.postgres.tuning\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = {'psycopg', 'jinja2', 'yaml', 'psycopg2'} & loaded\n"
        "print(sorted(heavy))\n"
    )
    assert fresh_python(code).strip() == "[]"


# --- tuned_as_answered: may an unchanged run skip the full path? ------------------------


def test_tuned_as_answered(tmp_path, monkeypatch):
    """What inspect reads of a real cluster directory, judged by the plan."""
    from matrix_synapse_setup.postinst import inspect, plan
    from matrix_synapse_setup.postinst.state import State

    cluster = a_cluster(tmp_path / "a")
    plain = a_cluster(tmp_path / "b", include=False)

    def as_answered(found, wanted: bool, explicit: bool) -> bool:
        monkeypatch.setattr(tuning, "cluster_for_port", lambda port, **_: found)
        facts = inspect.cluster_facts(5432, (wanted, explicit))
        nothing = dict.fromkeys(State._fields)
        state = State(**(nothing | {"cluster": facts, "tune": (wanted, explicit)}))
        return plan.tuned_as_answered(state)

    # the default answer, never applied: the full path must ask the cluster first
    assert not as_answered(cluster, True, False)
    tuning.ensure(cluster.dropin, tuning.text_for(cluster))
    assert as_answered(cluster, True, False)
    assert as_answered(cluster, True, True)
    assert not as_answered(cluster, False, True)  # to be removed
    tuning.remove(cluster.dropin)
    assert as_answered(cluster, False, True)
    # A cluster that does not read conf.d is never tuned: nothing for the full path to do.
    assert as_answered(plain, True, False)
    # Not a cluster of Debian's layout: nothing to tune.
    assert as_answered(None, True, False)
