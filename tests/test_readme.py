"""The README's SDK example runs as written (docs that match the code)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_sdk_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README lost its runnable SDK example"
    code = blocks[0].replace("/tmp/fedmarket-blobs", str(tmp_path / "blobs"))
    exec(compile(code, "README.md", "exec"), {})
    cid, spec_hash, parameters = capsys.readouterr().out.split()
    assert (
        cid.startswith("bafkrei")
        and len(bytes.fromhex(spec_hash)) == 32
        and int(parameters) == 64 * 32 + 32 + 32 * 10 + 10
    )
