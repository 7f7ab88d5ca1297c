"""AWS config profiles for remotes (docs/REMOTE.md "In transit"; store/s3.py resolve_profile), on
Ceph RGW and moto: credentials and region come from ~/.aws/credentials and ~/.aws/config as the
AWS CLI reads them, under a temporary HOME, and are never stored in the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import run_cli, write
from tests.test_remote import url

pytest.importorskip("obstore", reason="needs obstore: scripts/setup-s3.sh installs it")


def home_env(tmp_path, s3, *, credentials: str = "", config: str = "", **extra) -> dict:
    """An environment whose HOME holds only these AWS files, without AWS_* variables."""
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True, exist_ok=True)
    (home / ".aws" / "credentials").write_text(credentials)
    (home / ".aws" / "config").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return dict(env, HOME=str(home), **extra)


def keys(s3, section: str, user: str = "full") -> str:
    creds = s3.users[user]
    return f"[{section}]\naws_access_key_id = {creds.access_key}\naws_secret_access_key = {creds.secret_key}\n"


def add(store, s3, bucket, env, *extra, check=True):
    if not os.path.exists(store):
        run_cli(store, "init", env=env, check=True)
    return run_cli(store, "remote", "add", "origin", url(bucket), "--endpoint", s3.endpoint, "--allow-http",
                   *extra, env=env, check=check)


def test_remote_add_profile_reads_the_aws_files_and_stores_no_secret(s3, s3_bucket, tmp_path):
    """--profile P takes P's keys from ~/.aws/credentials even when the environment has other
    (wrong) keys, as the AWS CLI's --profile does; the binding keeps the name only, and every
    later command (push, clone) uses it."""
    env = home_env(tmp_path, s3, credentials=keys(s3, "team") + "[other]\naws_access_key_id = x\n"
                   "aws_secret_access_key = y\n", config="[profile team]\nregion = us-east-1\n",
                   AWS_ACCESS_KEY_ID="WRONG", AWS_SECRET_ACCESS_KEY="WRONG")
    a = tmp_path / "A"
    write(tmp_path / "src" / "f", b"through a profile")
    run_cli(a, "put", "ds", tmp_path / "src", env=env, check=True)
    add(a, s3, s3_bucket, env, "--profile", "team")
    assert "pushed ds:v0" in run_cli(a, "push", env=env, check=True).stdout
    binding = json.loads((a / "remotes.json").read_text())["origin"]
    assert binding["profile"] == "team"
    raw = (a / "remotes.json").read_text()
    assert s3.users["full"].secret_key not in raw and s3.users["full"].access_key not in raw
    assert "profile=team" in run_cli(a, "remote", "ls", env=env, check=True).stdout
    # without the profile the environment's wrong keys are used: refused (exit 10)
    denied = add(tmp_path / "B", s3, s3_bucket, env, check=False)
    assert denied.returncode == 10, denied.stderr
    b = tmp_path / "C"
    proc = subprocess.run([sys.executable, "-m", "artfs", "clone", url(s3_bucket), str(b), "--endpoint",
                           s3.endpoint, "--allow-http", "--profile", "team"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert run_cli(b, "cat", "ds:v0/f", env=env, check=True).stdout == "through a profile"


def test_aws_profile_and_default_profile_without_environment_keys(s3, s3_bucket, tmp_path):
    """No AWS_* keys: $AWS_PROFILE names the profile; without it the default profile is used; a
    profile's keys may be in the config file; the credentials file wins for the same key."""
    env = home_env(tmp_path, s3, credentials="[ci]\naws_access_key_id = WRONG\n" + keys(s3, "default"),
                   config=keys(s3, "profile ci"), AWS_PROFILE="ci")
    # [ci] of the credentials file sets a wrong access key: it wins over the config file's
    assert add(tmp_path / "A", s3, s3_bucket, env, check=False).returncode == 10
    env_default = {k: v for k, v in env.items() if k != "AWS_PROFILE"}
    add(tmp_path / "B", s3, s3_bucket, env_default)                  # [default] of credentials
    assert "profile" not in json.loads((tmp_path / "B" / "remotes.json").read_text())["origin"]
    only_config = home_env(tmp_path, s3, config=keys(s3, "profile ci"), AWS_PROFILE="ci")
    add(tmp_path / "C", s3, s3_bucket, only_config)                  # the keys in the config file


def test_a_missing_profile_is_one_line_exit_4_and_binds_nothing(s3, s3_bucket, tmp_path):
    env = home_env(tmp_path, s3, credentials=keys(s3, "team"))
    a = tmp_path / "A"
    proc = add(a, s3, s3_bucket, env, "--profile", "nosuch", check=False)
    assert proc.returncode == 4, proc.stderr
    assert "profile 'nosuch'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert run_cli(a, "remote", "ls", env=env, check=True).stdout == ""
    proc = add(a, s3, s3_bucket, dict(env, AWS_PROFILE="nosuch"), check=False)
    assert proc.returncode == 4 and "profile 'nosuch'" in proc.stderr
