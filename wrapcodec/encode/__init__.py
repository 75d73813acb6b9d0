"""The encoder: rate-distortion optimisation over the wrapper options (switchable neural
wrappers, §3.3: an option chosen per segment and signalled in 4 bits).

Each candidate coded in full is decoded exactly as the decoder will and measured; the lowest
``J = D + λ·R`` wins (:mod:`~wrapcodec.encode.cost`), or within a bitrate budget the highest
PSNR-YUV. Which candidates are coded in full is the effort level's; docs/effort.md describes
the search. The modules, from the entry point down:

- :mod:`~wrapcodec.encode.config` — :class:`EncodeConfig`, what an encode is asked to do;
- :mod:`~wrapcodec.encode.encoder` — :func:`encode_file`, one encode from source to ``.wrp``;
- :mod:`~wrapcodec.encode.parallel` — the segments handed out, here, to processes or to Dask;
- :mod:`~wrapcodec.encode.parts` — the work folder that ``--resume`` takes segments up from;
- :mod:`~wrapcodec.encode.segments` — one segment's option chosen, as a self-contained task;
- :mod:`~wrapcodec.encode.search` — which candidates of a segment are coded in full;
- :mod:`~wrapcodec.encode.rules` — the search's estimates and pruning rules, pure;
- :mod:`~wrapcodec.encode.efforts` — the effort levels as data;
- :mod:`~wrapcodec.encode.adapting` — content adaptation of a candidate coded in full;
- :mod:`~wrapcodec.encode.trials` — candidates coded and measured;
- :mod:`~wrapcodec.encode.rate` — the lowest QP within a bitrate budget;
- :mod:`~wrapcodec.encode.cost` — J, and when an update is kept;
- :mod:`~wrapcodec.encode.report` — progress, and what the encode did and why.
"""

from wrapcodec.encode.config import EncodeConfig
from wrapcodec.encode.cost import keeps_update, rd_cost
from wrapcodec.encode.encoder import encode_file
from wrapcodec.encode.report import EncodeReport, ProgressSink

__all__ = ["EncodeConfig", "EncodeReport", "ProgressSink", "encode_file", "keeps_update", "rd_cost"]
