"""``vlrl plan`` as users run it: the recipes' documented GPU counts fit, the shipped 3B recipe on one H100 does not
and the command names what does; exit statuses."""

import re
from pathlib import Path

import pytest
import yaml

from tools.plan_cli import main

pytestmark = pytest.mark.slow  # each parses a recipe through LightningCLI (a few seconds)

GPU_RECIPES = {"visionary_r1.yaml", "grpo_baseline.yaml", "vision_r1_ptst.yaml", "vision_r1_cold_start.yaml"}


def test_the_3b_recipe_does_not_fit_one_h100_and_names_what_does(capsys):
    assert main(["-c", "configs/visionary_r1.yaml", "--gpus", "1"]) == 1
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "what fits: -c configs/memory/adamw_8bit.yaml" in out
    # the overlay it names fits, and the same holds on 8 GPUs with FSDP (DDP would keep a full replica on each)
    assert main(["-c", "configs/visionary_r1.yaml", "-c", "configs/memory/adamw_8bit.yaml", "--gpus", "1"]) == 0
    assert main(["-c", "configs/visionary_r1.yaml", "-c", "configs/strategy/fsdp.yaml", "--gpus", "8"]) == 0
    assert main(["-c", "configs/visionary_r1.yaml", "--gpus", "8"]) == 1
    assert "DDP keeps a full replica" in capsys.readouterr().out


def _documented_fits() -> list[tuple[str, str]]:

    found = []
    for recipe in sorted(Path("configs").glob("*.yaml")):
        for line in recipe.read_text().splitlines():
            if line.startswith("#   vlrl plan "):
                found.append((recipe.name, line.removeprefix("#   vlrl plan ")))
    return found


@pytest.mark.parametrize("overlay", sorted(Path("configs/models").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_overlay_documents_plans_that_fit_with_their_peaks(overlay, capsys):
    """Each family's overlay names a released checkpoint whose shapes the planner knows, and the plans its header
    quotes fit, with the peak it quotes."""
    from models.families import family_of_checkpoint
    from tools.plan import KNOWN

    documented = [line for line in overlay.read_text().splitlines() if line.startswith("#   vlrl plan ")]
    assert documented, overlay
    config = yaml.safe_load(overlay.read_text())
    checkpoint = config["model"]["init_args"]["policy"]["model_name_or_path"]
    family = family_of_checkpoint(checkpoint)
    assert checkpoint in KNOWN and overlay.stem.startswith(family.model_type)
    data = config["data"]["init_args"]["prompts"]  # the release's lower bound; the upper one capped under the release's
    assert data["min_pixels"] == family.pixels[0] and data["max_pixels"] <= family.pixels[1]
    for line in documented:
        command, quoted = re.fullmatch(r"#   vlrl plan (.+)  \(peak ([0-9.]+) GiB\)", line).groups()
        assert main(command.split()) == 0, command
        assert re.search(r"peak +([0-9.]+) GiB", capsys.readouterr().out).group(1) == quoted, command


def test_every_gpu_recipe_documents_gpu_counts_that_fit(capsys):
    """Each recipe's header names the commands that fit, and the README's recipe table shows each one's peak."""
    documented = _documented_fits()
    assert GPU_RECIPES | {"sft_baseline.yaml"} <= {name for name, _ in documented}
    readme = Path("README.md").read_text().splitlines()
    for name, command in documented:
        assert main(command.split()) == 0, (name, command)
        peak = re.search(r"peak +([0-9.]+) GiB", capsys.readouterr().out).group(1)
        (row,) = [line for line in readme if line.startswith("| `") and f"`{Path(name).stem}`" in line]
        assert f"({peak}" in row, (name, command, peak, row)
