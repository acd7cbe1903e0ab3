"""The policy file is read strictly: unknown keys and bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from syft_flwr.data_owner.privacy import ENV_PRIVACY_POLICY, PrivacyPolicy
from syft_flwr.errors import ConfigError

GOOD = """
clip_norm = 1.0
noise_multiplier = 1.1
epsilon = 8
delta = 1e-5
sampling_rate = 0.5
per_project_epsilon = 4.0
[analytics.sensitivity]
num-examples = 1.0
"""


def test_reads_a_full_policy(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text('dataset = "clinic-a"\n' + GOOD)
    p = PrivacyPolicy.load(f)
    assert (p.clip_norm, p.noise_multiplier, p.epsilon, p.delta) == (1.0, 1.1, 8, 1e-5)
    assert p.sampling_rate == 0.5 and p.per_project_epsilon == 4.0
    assert p.dataset == "clinic-a" and p.sensitivities == {"num-examples": 1.0}
    assert "clinic-a" in p.describe() and str(f) in p.describe()


def test_dataset_defaults_to_data_dir_name(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(GOOD)
    data = tmp_path / "hospital data"
    data.mkdir()
    env = {ENV_PRIVACY_POLICY: str(f), "DATA_DIR": str(data)}
    p = PrivacyPolicy.from_env(env)
    assert p is not None and p.dataset == "hospital_data"
    assert PrivacyPolicy.load(f).dataset == "default"
    assert PrivacyPolicy.from_env({}) is None


def test_explicit_path_wins_over_env(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(GOOD.replace("epsilon = 8", "epsilon = 1"))
    b.write_text(GOOD)
    p = PrivacyPolicy.from_env({ENV_PRIVACY_POLICY: str(a)}, path=b)
    assert p is not None and p.epsilon == 8


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("clip = 3\n" + GOOD, "unknown key.*clip"),
        (GOOD.replace("clip_norm = 1.0", ""), "missing required key.*clip_norm"),
        (GOOD.replace("clip_norm = 1.0", "clip_norm = -1"), "clip_norm must be"),
        (
            GOOD.replace("clip_norm = 1.0", 'clip_norm = "1"'),
            "clip_norm must be a number",
        ),
        (
            GOOD.replace("noise_multiplier = 1.1", "noise_multiplier = 0"),
            "noise_multiplier",
        ),
        (GOOD.replace("delta = 1e-5", "delta = 1"), "delta must be in"),
        (GOOD.replace("sampling_rate = 0.5", "sampling_rate = 0"), "sampling_rate"),
        (GOOD.replace("num-examples = 1.0", "num-examples = -1"), "num-examples"),
        ('dataset = "../x"\n' + GOOD, "dataset must be"),
        (GOOD.replace("epsilon = 8", "epsilon = true"), "epsilon must be a number"),
    ],
)
def test_bad_policies_are_refused_with_file_and_key(
    tmp_path: Path, text: str, words: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=words) as err:
        PrivacyPolicy.load(f)
    assert str(f) in str(err.value)
