"""Issue 2 item 2: configuration file, defaults, lookup, validation, overrides, reload."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest

from dynamips_mgr.__main__ import overrides, parse_args
from dynamips_mgr.config import KEYS, Config, ConfigError, example_ini

REPO = Path(__file__).resolve().parents[1]

# What a GNS3 1.5 server's gns3_server.conf typically holds, other sections included.
GNS3_SERVER_CONF = """\
[Server]
host = 127.0.0.1
port = 3081
ssl = False
certfile = /home/u/.config/GNS3/ssl/server.cert
images_path = /srv/gns3/images
projects_path = /srv/gns3/projects
report_errors = True
console_start_port_range = 2001
console_end_port_range = 2500
udp_start_port_range = 10000
udp_end_port_range = 10100
auth = False
user = admin
password = p%ss

[Dynamips]
dynamips_path = /usr/local/bin/dynamips
allocate_aux_console_ports = False
mmap_support = no
sparse_memory_support = True
ghost_ios_support = On

[Qemu]
enable_kvm = True

[VPCS]
vpcs_path = /usr/bin/vpcs

[GNS3VM]
vmname = GNS3 VM
"""


@pytest.fixture
def no_config_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and an empty HOME: no configuration file anywhere."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return tmp_path


def test_embedded_defaults_are_used_without_any_file(no_config_files):
    config = Config.load()
    assert config.path is None
    assert config.values == {key: spec[1] for key, spec in KEYS.items()}
    assert (config.server("host"), config.server("port"), config.server("local")) == (
        "127.0.0.1",
        3080,
        False,
    )
    assert config.dynamips("dynamips_path") == "dynamips"


def test_lookup_takes_the_working_directory_file_before_the_home_one(no_config_files):
    home_file = no_config_files / "home" / ".config" / "dynamips_mgr" / "dynamips_mgr.ini"
    home_file.parent.mkdir(parents=True)
    home_file.write_text("[Server]\nport = 4001\n")
    config = Config.load()
    assert (config.path, config.server("port")) == (home_file, 4001)

    local_file = no_config_files / "work" / "dynamips_mgr.ini"
    local_file.write_text("[Server]\nport = 4002\n")
    config = Config.load()
    assert config.path.resolve() == local_file.resolve()
    assert config.server("port") == 4002


def test_an_existing_gns3_server_config_works(tmp_path: Path):
    path = tmp_path / "gns3_server.conf"
    path.write_text(GNS3_SERVER_CONF)
    config = Config.load(path)
    assert config.server("port") == 3081
    assert (config.server("console_start_port_range"), config.server("console_end_port_range")) == (
        2001,
        2500,
    )
    assert config.server("password") == "p%ss"  # no interpolation, as RawConfigParser
    assert config.dynamips("dynamips_path") == "/usr/local/bin/dynamips"
    assert config.dynamips("mmap_support") is False
    assert config.dynamips("ghost_ios_support") is True
    assert config.images_dir == Path("/srv/gns3/images/IOS")
    assert config.projects_location == Path("/srv/gns3/projects")


BAD = [
    ("[Server]\nport = 80a\n", "[Server] port", "not an integer"),
    (
        "[Server]\nconsole_start_port_range = 6000\nconsole_end_port_range = 5000\n",
        "[Server] console_end_port_range",
        "lower than",
    ),
    (
        "[Server]\nudp_start_port_range = 20000\nudp_end_port_range = 19999\n",
        "[Server] udp_end_port_range",
        "lower than",
    ),
    ("[Server]\nudp_end_port_range = 70000\n", "[Server] udp_end_port_range", "not a port"),
    ("[Server]\nlocal = maybe\n", "[Server] local", "not a boolean"),
    ("[Dynamips]\nmmap_support = sometimes\n", "[Dynamips] mmap_support", "not a boolean"),
    ("[Dynamips]\ncommand_timeout = nan\n", "[Dynamips] command_timeout", "finite"),
    ("[Dynamips]\nstop_timeout = 0\n", "[Dynamips] stop_timeout", "positive"),
    ("port = 3080\n", "cannot read configuration", "section header"),
    ("[Server]\nport = 1\nport = 2\n", "cannot read configuration", "already exists"),
]


@pytest.mark.parametrize(("text", "where", "why"), BAD)
def test_a_bad_value_is_one_line_naming_file_section_and_key(tmp_path, text, where, why):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Config.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert where in message and why in message


def test_a_bad_file_stops_the_command_line_with_one_clear_line(tmp_path):
    bad = tmp_path / "bad.ini"
    bad.write_text("[Server]\nconsole_start_port_range = 9000\nconsole_end_port_range = 8000\n")
    missing = tmp_path / "missing.ini"
    for path, key in ((bad, "[Server] console_end_port_range"), (missing, "not found")):
        run = subprocess.run(
            [sys.executable, "-m", "dynamips_mgr", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert run.returncode != 0
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert str(path) in lines[0] and key in lines[0]


def test_command_line_options_win_over_the_file(tmp_path):
    path = tmp_path / "server.ini"
    path.write_text("[Server]\nhost = 127.0.0.2\nport = 4000\nlocal = false\n")
    args = parse_args(["--config", str(path), "--port", "4100", "--local", "--allow"])
    config = Config.load(args.config, overrides(args))
    assert config.server("port") == 4100
    assert config.server("local") is True
    assert config.server("allow_remote_console") is True
    assert config.server("host") == "127.0.0.2"  # not given on the command line: the file's
    # a bad value given on the command line is reported as such, not as the file's
    args = parse_args(["--config", str(path), "--port", "70000"])
    with pytest.raises(ConfigError, match=r"^command line: \[Server\] port: 70000"):
        Config.load(args.config, overrides(args))


def test_example_ini_is_generated_from_the_key_table_and_holds_the_defaults():
    committed = REPO / "config.example.ini"
    assert committed.read_text() == example_ini(), "regenerate config.example.ini"
    assert Config.load(committed).values == {key: spec[1] for key, spec in KEYS.items()}
    for (section, key), (_kind, _default, text) in KEYS.items():
        assert text and f"{key} =" in committed.read_text(), (section, key)


def _server_file(path: Path, tmp_path: Path, fake_path: Path, **server: str) -> None:
    values = {
        "projects_path": tmp_path / "projects",
        "images_path": tmp_path / "images",
        "console_start_port_range": 21000,
        "console_end_port_range": 21100,
        "udp_start_port_range": 31000,
        "udp_end_port_range": 31100,
        "local": "false",
        **server,
    }
    lines = "".join(f"{key} = {value}\n" for key, value in values.items())
    path.write_text(f"[Server]\n{lines}\n[Dynamips]\ndynamips_path = {fake_path}\n")


async def test_config_reload_rereads_the_file_and_keeps_command_line_values(
    tmp_path, fake, make_api
):
    path = tmp_path / "server.ini"
    _server_file(path, tmp_path, fake.path)
    api = await make_api(Config.load(path, {("Server", "local"): True}))
    assert (await api.get("/version")).status == 200

    _server_file(path, tmp_path, fake.path, auth="true", user="admin", password="secret")
    reply = await api.post("/config/reload")
    assert reply.status == 201
    assert (await api.get("/version")).status == 401  # the new file's values are in force
    auth = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
    reply = await api.get("/version", headers=auth)
    assert reply.status == 200
    assert reply.body["local"] is True  # the file says false; the override is re-applied

    for broken in ({"port": "30x"}, {"console_end_port_range": "100"}):
        _server_file(path, tmp_path, fake.path, auth="false", **broken)
        reply = await api.post("/config/reload", headers=auth)
        assert reply.status == 409
        assert str(path) in reply.body["message"] and "[Server] " in reply.body["message"]
        assert (await api.get("/version")).status == 401  # nothing of the bad file applied
        assert api.state.config.server("console_end_port_range") == 21100


async def test_config_reload_is_refused_on_a_remote_server(make_api):
    api = await make_api(local=False)
    reply = await api.post("/config/reload")
    assert reply.status == 403
    assert reply.body == {
        "message": "You can only reload the configuration for a local server",
        "status": 403,
    }
