"""The decode path loads nothing of the encoder, training or benchmarks: a decoder holds only
what it needs to reconstruct frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# prefixes: wrapcodec.encode.*, wrapcodec.adapt and .adaptation, .train and .training, .bench.*
FORBIDDEN = ("wrapcodec.encode", "wrapcodec.adapt", "wrapcodec.train", "wrapcodec.bench")


def test_decoder_and_pipeline_import_nothing_of_the_encoder(tmp_path: Path) -> None:
    code = (
        "import json, sys; import wrapcodec.decoder, wrapcodec.pipeline; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('wrapcodec'))))"
    )
    # cwd outside the checkout: a source wrapcodec/ folder there would shadow the installed one
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    loaded = json.loads(done.stdout)
    assert "wrapcodec.decoder" in loaded and "wrapcodec.pipeline" in loaded
    assert [m for m in loaded if m.startswith(FORBIDDEN)] == []
