"""Secrets and configs in the model: swarmkit's name and size rules, docker's --secret/--config syntax, and
the codec."""

from __future__ import annotations

import pytest

from pyswarm.model import FileReference
from pyswarm.model.parse import SpecError
from pyswarm.model.secret import (
    Config,
    Secret,
    config_from_dict,
    file_reference,
    object_data,
    object_name,
    object_to_dict,
    secret_from_dict,
)

NAME_RULE = "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be"


@pytest.mark.parametrize("name", ["a", "db_password", "app-dev.crt", "A1", "x" * 64, "a-b_c.d9"])
def test_names_swarmkit_accepts(name: str) -> None:
    assert object_name(name) == name


@pytest.mark.parametrize("name", ["-a", "a-", "a.", "_a", "a b", "a/b", "x" * 65, "é", "a;rm", "a\n"])
def test_names_swarmkit_refuses_with_its_message(name: str) -> None:
    with pytest.raises(SpecError, match=NAME_RULE.replace("[", r"\[").replace("]", r"\]")):
        object_name(name)


def test_an_empty_name_must_be_provided() -> None:
    with pytest.raises(SpecError, match=r"^name must be provided$"):
        object_name("")


def test_secret_data_is_over_0_and_under_512000_bytes() -> None:
    assert object_data(b"x", "secret") == b"x"
    assert len(object_data(b"x" * 511_999, "secret")) == 511_999
    for size in (0, 512_000):
        with pytest.raises(SpecError, match=r"^secret data must be larger than 0 and less than 512000 bytes$"):
            object_data(b"x" * size, "secret")


def test_config_data_has_swarmkits_bigger_limit() -> None:
    assert len(object_data(b"x" * 600_000, "config")) == 600_000
    with pytest.raises(SpecError, match=r"^config data must be larger than 0 and less than 1024000 bytes$"):
        object_data(b"x" * 1_024_000, "config")


def test_a_secrets_data_is_not_in_its_repr() -> None:
    secret = Secret(id="s1", name="pw", data=b"hunter2")
    assert "hunter2" not in repr(secret)


# --- the flag --------------------------------------------------------------------------------------------


def test_a_bare_name_takes_the_defaults() -> None:
    assert file_reference("pw", "secret") == FileReference(name="pw", target="pw", uid="0", gid="0", mode=0o444)
    assert file_reference("nginx.conf", "config") == FileReference(name="nginx.conf", target="/nginx.conf")


def test_the_long_form_with_every_field() -> None:
    ref = file_reference("source=pw,target=db/password,uid=33,gid=44,mode=0400", "secret")
    assert ref == FileReference(name="pw", target="db/password", uid="33", gid="44", mode=0o400)


def test_src_is_source_and_keys_are_case_insensitive_as_in_docker() -> None:
    assert file_reference("SRC=site,Target=/etc/nginx/site.conf", "config") == FileReference(
        name="site", target="/etc/nginx/site.conf"
    )


@pytest.mark.parametrize("mode", ["0440", "440", "0o440"])
def test_the_mode_is_octal(mode: str) -> None:
    assert file_reference(f"source=pw,mode={mode}", "secret").mode == 0o440


def test_an_absolute_secret_target_under_run_secrets_is_kept_relative() -> None:
    assert file_reference("source=pw,target=/run/secrets/app/pw", "secret").target == "app/pw"


def test_a_relative_config_target_is_taken_from_the_root_as_docker_does() -> None:
    assert file_reference("source=site,target=etc/site.conf", "config").target == "/etc/site.conf"


def test_csv_quoting_as_docker_reads_it() -> None:
    assert file_reference('"source=pw","target=a,b"', "secret").target == "a,b"


@pytest.mark.parametrize(
    ("text", "kind", "message"),
    [
        ("target=x", "secret", "^source is required$"),
        ("source=", "secret", "^source is required$"),
        ("source=pw,size=3", "secret", "^invalid field in secret request: size$"),
        ("source=pw,size=3", "config", "^invalid field in config request: size$"),
        ("source=pw,target", "secret", "^invalid field 'target' must be a key=value pair$"),
        ("source=pw,=x", "secret", "^invalid field '=x' must be a key=value pair$"),
        ("source=pw,mode=0999", "secret", "invalid mode specified"),
        ("source=pw,mode=01777", "secret", "invalid mode specified"),
        ("source=pw,mode=rw", "secret", "invalid mode specified"),
        ("source=pw,uid=root", "secret", "invalid uid 'root'"),
        ("source=pw,gid=-1", "secret", "invalid gid '-1'"),
        ("source=pw,uid=4294967296", "secret", "invalid uid"),
        ("source=a b", "secret", "invalid name"),
        ("source=pw,target=/etc/passwd", "secret", "an absolute target must be under /run/secrets/"),
        ("source=pw,target=/run/secrets/", "secret", "an absolute target must be under /run/secrets/"),
        ("source=pw,target=/run/secretsx/a", "secret", "an absolute target must be under /run/secrets/"),
        ("source=pw,target=../../etc/shadow", "secret", "invalid secret target"),
        ("source=pw,target=/run/secrets/../x", "secret", "invalid secret target"),
        ("source=pw,target=a//b", "secret", "invalid secret target"),
        ("source=pw,target=a/./b", "secret", "invalid secret target"),
        ("source=pw,target=a/", "secret", "invalid secret target"),
        ("source=pw,target=a\x01b", "secret", "no control characters"),
        ("source=c,target=/", "config", "invalid config target"),
        ("source=c,target=//etc/x", "config", "invalid config target"),
        ("source=c,target=/etc/../x", "config", "invalid config target"),
        ('"source=pw', "secret", "invalid secret"),
    ],
)
def test_bad_references_are_refused_with_docker_like_messages(text: str, kind: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        file_reference(text, kind)  # type: ignore[arg-type]


# --- codec -----------------------------------------------------------------------------------------------


def test_the_store_document_never_holds_a_secrets_data() -> None:
    secret = Secret(id="s1", name="pw", data=b"hunter2", labels={"a": "b"}, created_at=1.0, updated_at=2.0)
    doc = object_to_dict(secret)
    assert doc == {"id": "s1", "name": "pw", "labels": {"a": "b"}, "created_at": 1.0, "updated_at": 2.0}
    assert secret_from_dict(doc, b"hunter2") == secret
    with pytest.raises(ValueError, match="never shown"):
        object_to_dict(secret, with_data=True)


def test_a_config_round_trips_with_its_data_in_base64() -> None:
    config = Config(id="c1", name="site", data=b"\x00server {}\n", created_at=1.0, updated_at=1.0)
    doc = object_to_dict(config, with_data=True)
    assert doc["data"] == "AHNlcnZlciB7fQo="
    assert config_from_dict(doc) == config
    assert config_from_dict(object_to_dict(config), config.data) == config
