"""Synthetic BGL-layout log corpora with known anomalous lines, for LogMILP experiments and tests.

``generate(SyntheticConfig(...), out_dir)`` streams a corpus to ``out_dir`` in fixed-size blocks, so
memory stays flat whatever the line count, and the output is byte-identical for the same config:

- ``corpus.log`` (or ``corpus.log.gz``): one line per event in the CFDR/BGL layout
  ``<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>``;
  label ``-`` for normal lines, a BGL alert tag (``KERNDTLB``, ``APPSEV``, ...) for anomalous lines.
- ``alarms.csv``: ``start,end`` epoch seconds of every anomaly episode, padded like an operator's alarm.
- ``episodes.csv``: one row per episode with its kind, the line numbers that carry the label and
  the line numbers of the context that makes them anomalous (for localization checks).
- ``truth.json``: the config, line/label counts, episodes and labelled lines per kind, the hard-case
  counts, the template inventory and (corrupt mode) the bad lines planted.
- ``template_ids.i32`` (only with ``write_template_ids``): little-endian int32 template id per valid
  line, in file order, for parser grouping-accuracy checks.

The anomaly kinds and exactly which line carries the label are documented in ``docs/synthetic.md``.

Modules: ``config`` (SyntheticConfig), ``vocabulary`` and ``templates`` (the template inventory),
``blocks`` (one block of lines: traffic and planted episodes), ``lines`` (BGL text, corrupt lines),
``generator`` (streaming the blocks to files, the truth and the summary) and ``cli``
(``python -m ray_logmilp.synthetic --out DIR --lines 1000000 --seed 0 [--gzip] [--corrupt]``).
"""
from ray_logmilp.synthetic.config import ANOMALY_KINDS, CORRUPT_KINDS, SyntheticConfig
from ray_logmilp.synthetic.generator import generate
from ray_logmilp.synthetic.templates import Template, build_templates

__all__ = ["ANOMALY_KINDS", "CORRUPT_KINDS", "SyntheticConfig", "Template", "build_templates", "generate"]
