import json
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from datamodules.tables import json_syntax_errors, load_table, read_table

FIXTURES = Path(__file__).parents[1] / "fixtures"


def test_a_llama_factory_folder_is_not_taken_for_a_save_to_disk_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"vision_r1_cold: a LLaMA-Factory data folder.*dataset_dir="):
        load_table(FIXTURES / "vision_r1_cold")
    Dataset.from_list([{"a": 1}, {"a": 2}]).save_to_disk(tmp_path / "one")  # dataset_info.json + state.json
    assert (tmp_path / "one" / "dataset_info.json").exists()
    assert load_table(tmp_path / "one")[0]["a"] == [1, 2]
    DatasetDict({"train": Dataset.from_list([{"a": 1}]), "val": Dataset.from_list([{"a": 3}])}).save_to_disk(
        tmp_path / "two"
    )
    assert load_table(tmp_path / "two", "val")[0]["a"] == [3]


def test_json_errors_give_the_line_counted_from_one(tmp_path):
    (tmp_path / "rows.json").write_text('[\n  {"a": 1},\n  {"a": 2,,}\n]\n')
    bad, lines_format = json_syntax_errors(tmp_path / "rows.json")
    assert not lines_format and [(b.line, b.message[:26]) for b in bad] == [(3, "line 3 is not valid JSON (")]
    with pytest.raises(ValueError, match=r"rows\.json: cannot be read as json: line 3 is not valid JSON"):
        load_table(tmp_path / "rows.json")
    with pytest.raises(ValueError, match=r"line 3"):  # a JSON document cannot be read around a broken line
        read_table(tmp_path / "rows.json", skip_bad_lines=True)


def test_skipped_lines_keep_the_column_types_of_the_rest(tmp_path):
    lines = [json.dumps({"a": 1, "b": [1.5]}), "not json", json.dumps({"a": 3, "b": [2.5]})]
    (tmp_path / "rows.jsonl").write_text("\r\n".join(lines))
    table = read_table(tmp_path / "rows.jsonl", skip_bad_lines=True)
    assert table.dataset["a"] == [1, 3] and table.dataset["b"] == [[1.5], [2.5]]
    assert [(b.line, b.path.name) for b in table.bad_lines] == [(2, "rows.jsonl")]
    (tmp_path / "all_bad.jsonl").write_text("x\ny\n")
    with pytest.raises(ValueError, match=r"all_bad\.jsonl: no readable line"):
        read_table(tmp_path / "all_bad.jsonl", skip_bad_lines=True)
