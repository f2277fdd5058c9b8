"""Image references as docker reads them: registry, repository, tag, digest, and the forms swarm pins."""

from __future__ import annotations

import pytest

from pyswarm.model.images import parse_image_ref

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "domain", "path", "tag", "digest", "familiar", "tagged"),
    [
        ("nginx", "docker.io", "library/nginx", "", "", "nginx", "nginx:latest"),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", "", "nginx:1.25", "nginx:1.25"),
        ("user/app:dev", "docker.io", "user/app", "dev", "", "user/app:dev", "user/app:dev"),
        ("docker.io/library/nginx", "docker.io", "library/nginx", "", "", "nginx", "nginx:latest"),
        ("localhost:5000/app", "localhost:5000", "app", "", "", "localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost/app:1", "localhost", "app", "1", "", "localhost/app:1", "localhost/app:1"),
        ("reg.example.com/a/b:2", "reg.example.com", "a/b", "2", "", "reg.example.com/a/b:2", "reg.example.com/a/b:2"),
        (f"nginx@{DIGEST}", "docker.io", "library/nginx", "", DIGEST, f"nginx@{DIGEST}", f"nginx@{DIGEST}"),
        (
            f"nginx:latest@{DIGEST}",
            "docker.io",
            "library/nginx",
            "latest",
            DIGEST,
            f"nginx:latest@{DIGEST}",
            "nginx:latest",
        ),
    ],
)
def test_references_split_as_docker_does(
    ref: str, domain: str, path: str, tag: str, digest: str, familiar: str, tagged: str
) -> None:
    parsed = parse_image_ref(ref)
    assert (parsed.domain, parsed.path, parsed.tag, parsed.digest) == (domain, path, tag, digest)
    assert (parsed.familiar, parsed.tagged) == (familiar, tagged)
    assert not parsed.is_id


def test_a_tag_is_pinned_the_way_swarm_writes_it() -> None:
    assert parse_image_ref("nginx").pinned(DIGEST) == f"nginx:latest@{DIGEST}"
    assert parse_image_ref("localhost:5000/app:2").pinned(DIGEST) == f"localhost:5000/app:2@{DIGEST}"


def test_an_image_id_is_a_reference_without_a_registry() -> None:
    parsed = parse_image_ref(DIGEST)
    assert parsed.is_id and parsed.familiar == DIGEST and parsed.repository == ""
    assert not parsed.same_repository(parse_image_ref("nginx"))


def test_same_repository_ignores_tag_and_spelling() -> None:
    assert parse_image_ref("nginx:1").same_repository(parse_image_ref(f"docker.io/library/nginx@{DIGEST}"))
    assert not parse_image_ref("nginx").same_repository(parse_image_ref("user/nginx"))


@pytest.mark.parametrize("ref", ["", "UPPER", "nginx:", "nginx@sha256:xyz", "a//b", "nginx:bad tag", "-x"])
def test_what_docker_refuses_is_refused(ref: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference"):
        parse_image_ref(ref)
