"""The parse workers' stage table and the driver's template assigner, without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ray_logmilp.ingest.format_spec import load_format
from ray_logmilp.ingest.parse import parse_chunk
from ray_logmilp.ingest.mining import TemplateParser
from ray_logmilp.ingest.parsing import ParserConfig, mask_array
from ray_logmilp.ingest.mining import TemplateAssigner as _TemplateAssigner
from ray_logmilp.ingest.stage import MASKED_TYPE as _MASKED_TYPE, stage_table as _stage_table
from tests.unit.ingest.test_parsing import synthetic_stream

CFG = ParserConfig(sim_th=0.5, masking=((r"(\d+\.){3}\d+", "<*>"), (r"\b0[xX][0-9a-fA-F]+\b", "<*>"),
                                        (r"\b\d+\b", "<*>")))


def test_stage_masks_distinct_contents_once_and_keeps_every_row():
    fmt = load_format("bgl")
    parser_cfg = ParserConfig.from_format(fmt)
    lines = [f"- {1117838570 + i} 2005.06.03 R02 2005-06-03-15.42.50.{i:06d} R02 RAS KERNEL INFO "
             f"cache parity error {i % 3} corrected".encode() for i in range(9)]
    events, quarantine = parse_chunk(fmt, lines, "f.log", 1)
    stage = _stage_table(0, events, quarantine, parser_cfg)
    assert stage.schema.field("masked").type == _MASKED_TYPE
    (masked,) = stage.column("masked").chunks
    assert len(masked.dictionary) == 3                 # three distinct contents, masked once each
    expected = mask_array(parser_cfg, events.column("content")).to_pylist()
    assert masked.to_pylist() == expected and expected[0] == "cache parity error <*> corrected"

    # a quarantined line keeps its place, with no masked message
    events, quarantine = parse_chunk(fmt, lines[:4] + [b"garbage"] + lines[4:], "f.log", 1)
    stage = _stage_table(0, events, quarantine, parser_cfg)
    assert stage.num_rows == 10 and stage.column("line_no").to_pylist() == list(range(1, 11))
    assert stage.column("masked").to_pylist() == expected[:4] + [None] + expected[4:]
    assert stage.column("reason").to_pylist()[4] == "header_mismatch"


def _as_shuffled_dictionary(values: pa.Array, rng) -> pa.DictionaryArray:
    """The same strings dictionary-encoded with a permuted dictionary and unused extra entries, as a sliced
    block from another worker could carry."""
    encoded = values.dictionary_encode()
    extra = pa.array([f"never used {i}" for i in range(5)])
    dictionary = pa.concat_arrays([encoded.dictionary, extra])
    perm = rng.permutation(len(dictionary))
    new_code = np.empty_like(perm)
    new_code[perm] = np.arange(len(perm))
    indices = new_code[encoded.indices.to_numpy()].astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(indices), dictionary.take(pa.array(perm)))


def test_assigner_on_dictionaries_equals_plain_strings_and_fit_order():
    lines, _ = synthetic_stream(20_000, seed=3)
    masked = mask_array(CFG, pa.array(lines))
    rng = np.random.default_rng(0)
    plain, encoded = _TemplateAssigner(CFG), _TemplateAssigner(CFG)
    plain_ids, dict_ids = [], []
    for start in range(0, len(lines), 4_000):
        batch = masked.slice(start, 4_000)
        plain_ids.append(plain.assign(batch))
        halves = [_as_shuffled_dictionary(batch.slice(0, 1_500), rng),
                  _as_shuffled_dictionary(batch.slice(1_500), rng)]
        dict_ids.append(encoded.assign(pa.chunked_array(halves, _MASKED_TYPE)))
    np.testing.assert_array_equal(np.concatenate(dict_ids), np.concatenate(plain_ids))
    # drain3 saw the same messages in the same order (no unused dictionary entry, none out of turn)
    assert encoded.parser.freeze().texts == plain.parser.freeze().texts
    one_pass = TemplateParser(CFG)
    np.testing.assert_array_equal(one_pass.fit_lines(masked), np.concatenate(plain_ids))
