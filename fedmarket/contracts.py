"""Compile the Solidity sources offline through py-solc-x and the repo's solc adapter.

No native solc can be downloaded here, so `toolchain/solc` (a Node script over the official
WebAssembly build from npm) answers `solc --version` and `solc --standard-json` like the native
binary. py-solc-x finds it as `.solcx/solc-v<version>`. Results are cached in
`build/contracts.json`, keyed by the hash of every source file and compiler setting, so only a
change recompiles (a cold compile takes a few seconds).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fedmarket.errors import CompilationError
from fedmarket.files import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLC_VERSION = "0.8.28"  # pinned in package.json (npm `solc`) and ape-config.yaml
EVM_VERSION = "cancun"  # transient storage for ReentrancyGuardTransient
OPTIMIZER_RUNS = 200
CONTRACTS_DIR = "contracts"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict]
    bytecode: str


def solc_binary_dir(root: Path = REPO_ROOT) -> Path:
    """Folder holding `solc-v<version>` for py-solc-x (SOLCX_BINARY_PATH); created on first use."""
    folder = root / ".solcx"
    link = folder / f"solc-v{SOLC_VERSION}"
    if not link.exists():
        folder.mkdir(exist_ok=True)
        link.symlink_to(root / "toolchain" / "solc")
    return folder


def _sources(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / CONTRACTS_DIR).rglob("*.sol"))


def _standard_input(sources: list[str]) -> dict:
    return {
        "language": "Solidity",
        "sources": {path: {"urls": [path]} for path in sources},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}},
        },
    }


def _fingerprint(root: Path, sources: list[str], standard_input: dict) -> str:
    digest = hashlib.sha256(json.dumps(standard_input, sort_keys=True).encode())
    digest.update(SOLC_VERSION.encode())
    for path in sources:
        digest.update(path.encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()


def compile_contracts(root: Path = REPO_ROOT, *, cache_path: Path | None = None) -> dict[str, Artifact]:
    """Artifacts of every contract under `contracts/` (test contracts included), by contract name."""
    import solcx

    cache_path = cache_path or root / "build" / "contracts.json"
    sources = _sources(root)
    standard_input = _standard_input(sources)
    fingerprint = _fingerprint(root, sources, standard_input)
    if cache_path.exists():
        cached = json.loads(cache_path.read_text())
        if cached.get("fingerprint") == fingerprint:
            return {name: Artifact(name, **fields) for name, fields in cached["artifacts"].items()}

    os.environ["SOLCX_BINARY_PATH"] = str(solc_binary_dir(root))
    try:
        output = solcx.compile_standard(
            standard_input, base_path=str(root), allow_paths=[str(root)], solc_version=SOLC_VERSION
        )
    except solcx.exceptions.SolcError as exc:
        raise CompilationError(f"solc failed:\n{exc}") from exc
    artifacts = {}
    for path, contracts in output["contracts"].items():
        if not path.startswith(CONTRACTS_DIR + "/"):
            continue
        for name, compiled in contracts.items():
            bytecode = compiled["evm"]["bytecode"]["object"]
            if bytecode:
                artifacts[name] = Artifact(name, compiled["abi"], "0x" + bytecode)

    payload = {
        "fingerprint": fingerprint,
        "artifacts": {n: {"abi": a.abi, "bytecode": a.bytecode} for n, a in artifacts.items()},
    }
    atomic_write(cache_path, json.dumps(payload).encode())  # concurrent compiles never collide
    return artifacts
