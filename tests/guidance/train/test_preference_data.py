import json

import numpy as np
import pytest
import torch

from guidance.families.base import VideoShape
from guidance.train.preference_data import (
    MISSING,
    PreferenceDataError,
    default_split,
    load_preference_data,
    read_pairs,
    write_pairs,
)
from guidance.video_io import write_video
from tests.guidance.families.equivalence import test_image
from tests.guidance.train.synthetic import OBJECTIVES, clip_records, latent_records

SHAPE = VideoShape(height=32, width=32, frames=9)
WAN_LATENT = (16, 3, 4, 4)


@pytest.fixture(scope="module")
def wan(tiny_family):
    return tiny_family("wan")


def test_latents_round_trip(wan, tmp_path):
    records = list(latent_records(WAN_LATENT, 6))
    write_pairs(tmp_path, OBJECTIVES, records, kind="latents", description="synthetic")
    data = load_preference_data(tmp_path, wan)
    assert data.objectives == OBJECTIVES and data.description == "synthetic" and len(data) == 6
    for i, record in enumerate(records):
        assert torch.equal(data.latents_a[i], record["a"]) and torch.equal(data.latents_b[i], record["b"])
        assert data.prompts[i] == record["prompt"] and data.shapes[i] == SHAPE
        for k, name in enumerate(OBJECTIVES):
            code = {"A": 0, "B": 1, "tie": 2}.get(record["labels"].get(name), MISSING)
            assert int(data.labels[i, k]) == code
    assert data.indices("test") == [0, 4]
    # A subset of objectives; pairs without any label on it are dropped and counted.
    other = load_preference_data(tmp_path, wan, ["other"])
    assert other.labels.shape == (3, 1) and other.dropped == 3


def test_clips_round_trip_encodes_with_the_pipeline_vae(wan, tmp_path):
    records = list(clip_records(SHAPE.frames, SHAPE.height, SHAPE.width, 2))
    write_pairs(tmp_path, ["bright"], records, kind="clips")
    assert sorted(p.name for p in (tmp_path / "clips").iterdir())[0] == "000000_a.npy"
    data = load_preference_data(tmp_path, wan)
    expected = wan.encode(records[1]["b"][None], SHAPE)[0]
    assert data.latents_b[1].shape == WAN_LATENT and torch.allclose(data.latents_b[1], expected, atol=1e-6)


def test_mp4_clips_and_the_default_hash_split(wan, tmp_path):
    clip = next(clip_records(SHAPE.frames, SHAPE.height, SHAPE.width, 1))
    for side in ("a", "b"):
        write_video(clip[side], tmp_path / f"{side}.mp4")
    (tmp_path / "dataset.json").write_text(json.dumps({"objectives": ["vq"]}))
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "p", "a": "a.mp4", "b": "b.mp4", "labels": {"vq": "A"}}))
    data = load_preference_data(tmp_path, wan)
    assert data.latents_a[0].shape == WAN_LATENT and torch.isfinite(data.latents_a[0]).all()
    assert bool(data.test[0]) == (default_split("p", "a.mp4", "b.mp4") == "test")
    splits = [default_split(f"prompt {i}", "a", "b") for i in range(2000)]
    assert splits == [default_split(f"prompt {i}", "a", "b") for i in range(2000)]
    assert 0.07 < splits.count("test") / len(splits) < 0.13


def _dataset(tmp_path, rows, objectives=("vq", "mq")):
    np.save(tmp_path / "a.npy", np.zeros((9, 32, 32, 3), np.float32))
    np.save(tmp_path / "b.npy", np.ones((9, 32, 32, 3), np.float32))
    np.save(tmp_path / "short.npy", np.ones((5, 32, 32, 3), np.float32))
    np.save(tmp_path / "odd.npy", np.ones((8, 32, 32, 3), np.float32))
    (tmp_path / "dataset.json").write_text(json.dumps({"objectives": list(objectives)}))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


GOOD = {"prompt": "p", "a": "a.npy", "b": "b.npy", "labels": {"vq": "A"}}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**GOOD, "labels": {"vq": "C"}}, r"line 2: labels.vq must be \"A\", \"B\" or \"tie\""),
        ({**GOOD, "labels": {"ta": "A"}}, "line 2: labels: unknown objective 'ta'"),
        ({**GOOD, "b": "missing.npy"}, "line 2: b: file not found: missing.npy"),
        ({**GOOD, "a": "a.gif"}, "line 2: a: unsupported file type '.gif'"),
        ({**GOOD, "split": "val"}, "line 2: split must be"),
        ({k: v for k, v in GOOD.items() if k != "prompt"}, "line 2: missing field 'prompt'"),
        ({**GOOD, "labels": ["A"]}, "line 2: labels must be an object"),
        ({**GOOD, "shape": {"frames": 9}}, "line 2: shape: shape must be"),
    ],
)
def test_malformed_pairs_name_the_line_and_field(tmp_path, row, message):
    _dataset(tmp_path, [GOOD, row])
    with pytest.raises(PreferenceDataError, match=message):
        read_pairs(tmp_path)


def test_invalid_dataset_json_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        read_pairs(tmp_path)
    _dataset(tmp_path, [GOOD], objectives=["vq", "vq"])
    with pytest.raises(PreferenceDataError, match="unique identifiers"):
        read_pairs(tmp_path)
    (tmp_path / "dataset.json").write_text("{")
    with pytest.raises(PreferenceDataError, match="dataset.json: not valid JSON"):
        read_pairs(tmp_path)
    _dataset(tmp_path, [GOOD])
    (tmp_path / "pairs.jsonl").write_text(json.dumps(GOOD) + "\n{nope\n")
    with pytest.raises(PreferenceDataError, match="line 2: not valid JSON"):
        read_pairs(tmp_path)


def test_shape_mismatches_and_unknown_objectives_are_load_errors(wan, tmp_path):
    _dataset(tmp_path, [GOOD, {**GOOD, "b": "short.npy"}])
    with pytest.raises(PreferenceDataError, match=r"line 2: a and b have different shapes: 9 frames .* vs 5 frames"):
        load_preference_data(tmp_path, wan)
    _dataset(tmp_path, [{**GOOD, "a": "odd.npy", "b": "odd.npy"}])
    with pytest.raises(PreferenceDataError, match="line 1: a: clip .* does not fit this pipeline: frames must be"):
        load_preference_data(tmp_path, wan)
    _dataset(tmp_path, [GOOD])
    with pytest.raises(PreferenceDataError, match="objective.* ta not in the data set"):
        load_preference_data(tmp_path, wan, ["vq", "ta"])


def test_latents_are_checked_against_the_pipeline_layout(wan, tmp_path):
    write_pairs(tmp_path, ["vq"], [{"prompt": "p", "a": torch.zeros(16, 3, 4, 5), "b": torch.zeros(16, 3, 4, 5),
                                    "labels": {"vq": "tie"}}])
    with pytest.raises(PreferenceDataError, match="line 1: a: .*cannot tell the video shape"):
        load_preference_data(tmp_path, wan)
    write_pairs(tmp_path, ["vq"], [{"prompt": "p", "a": torch.zeros(WAN_LATENT), "b": torch.zeros(WAN_LATENT),
                                    "labels": {"vq": "tie"}, "shape": {"frames": 9, "height": 32, "width": 64}}])
    with pytest.raises(PreferenceDataError, match=r"latents have shape \(16, 3, 4, 4\), but .* are \(16, 3, 4, 8\)"):
        load_preference_data(tmp_path, wan)


def test_write_pairs_validates_records(tmp_path):
    record = {"prompt": "p", "a": torch.zeros(2, 2), "b": torch.zeros(2, 2), "labels": {"vq": "A"}}
    with pytest.raises(PreferenceDataError, match="record 0: labels: unknown objective 'mq'"):
        write_pairs(tmp_path, ["vq"], [{**record, "labels": {"mq": "A"}}])
    with pytest.raises(PreferenceDataError, match="record 0: a and b have different shapes"):
        write_pairs(tmp_path, ["vq"], [{**record, "b": torch.zeros(2, 3)}])
    with pytest.raises(PreferenceDataError, match="record 0: a: a clip must be"):
        write_pairs(tmp_path, ["vq"], [record], kind="clips")


def test_unreadable_or_keyless_latents_files_are_named_errors(tmp_path):
    from safetensors.torch import save_file

    from guidance.train.preference_data import read_latents, read_trajectory

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(PreferenceDataError, match="broken.safetensors: not a readable safetensors file"):
        read_latents(broken)
    keyless = tmp_path / "keyless.safetensors"
    save_file({"other": torch.zeros(2)}, str(keyless))
    with pytest.raises(PreferenceDataError, match=r"no tensor named 'latents' \(has: other\)"):
        read_latents(keyless)
    assert read_trajectory(keyless, (2,)) is None
    half = tmp_path / "half.safetensors"
    save_file({"latents": torch.zeros(2), "trajectory": torch.zeros(1, 2)}, str(half))
    with pytest.raises(PreferenceDataError, match="has 'trajectory' but not 'trajectory_t'"):
        read_trajectory(half, (2,))


def test_pair_images_round_trip_each_written_once(tiny_family, tmp_path):
    from PIL import Image

    first, second = test_image(0, 48, 48), tmp_path / "second.png"
    test_image(1, 48, 48).save(second)
    records = [{**record, "image": image}
               for record, image in zip(latent_records(WAN_LATENT, 4), (first, first, second, str(second)))]
    root = write_pairs(tmp_path / "data", OBJECTIVES, records)
    rows = [json.loads(line) for line in (root / "pairs.jsonl").read_text().splitlines()]
    assert [row["image"] for row in rows] == ["images/000000.png"] * 2 + ["images/000001.png"] * 2
    assert sorted(p.name for p in (root / "images").iterdir()) == ["000000.png", "000001.png"]
    data = load_preference_data(root, tiny_family("wan-i2v"))
    assert data.images == [root / "images" / "000000.png"] * 2 + [root / "images" / "000001.png"] * 2
    for path, image in ((data.images[0], first), (data.images[2], Image.open(second))):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(image))


def test_a_model_takes_pair_images_as_it_takes_images(tiny_family, tmp_path):
    write_pairs(tmp_path / "t2v", OBJECTIVES, latent_records(WAN_LATENT, 2))
    with pytest.raises(PreferenceDataError, match="line 1: image: missing; this Wan model is image-to-video"):
        load_preference_data(tmp_path / "t2v", tiny_family("wan-i2v"))
    records = [{**record, "image": test_image(0, 32, 32)} for record in latent_records(WAN_LATENT, 2)]
    write_pairs(tmp_path / "i2v", OBJECTIVES, records)
    with pytest.raises(PreferenceDataError, match="line 1: image: this Wan model is text-to-video only"):
        load_preference_data(tmp_path / "i2v", tiny_family("wan"))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("missing.png", "line 2: image: file not found: missing.png"),
        ("../outside.png", "line 2: image: must be a path inside the data set directory"),
        ("junk.png", "line 2: image: .*junk.png: not a PNG, JPEG or WebP image"),
        ("truncated.png", "line 2: image: .*truncated.png: the image cannot be decoded"),
        (7, "line 2: image: must be a path"),
        (["good.png"], "line 2: image: must be a path"),
    ],
)
def test_bad_pair_images_name_the_line_and_field(tmp_path, image, message):
    root = tmp_path / "data"
    root.mkdir()
    test_image(0, 8, 8).save(tmp_path / "outside.png")
    test_image(0, 8, 8).save(root / "good.png")
    (root / "junk.png").write_bytes(b"not an image")
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:-40])
    _dataset(root, [{**GOOD, "image": "good.png"}, {**GOOD, "image": image}])
    with pytest.raises(PreferenceDataError, match=message):
        read_pairs(root)


def test_write_pairs_refuses_an_image_it_cannot_write(tmp_path):
    record = {"prompt": "p", "a": torch.zeros(2, 2), "b": torch.zeros(2, 2), "labels": {"vq": "A"}}
    with pytest.raises(PreferenceDataError, match="record 0: image: must be a PIL image or the path of an image file"):
        write_pairs(tmp_path, ["vq"], [{**record, "image": np.zeros((4, 4, 3))}])
    with pytest.raises(PreferenceDataError, match="record 0: image: .*nowhere.png: file not found"):
        write_pairs(tmp_path, ["vq"], [{**record, "image": tmp_path / "nowhere.png"}])
