"""The fake Hub fixture (tests/fake_hub.py) against the real huggingface_hub and transformers clients."""

import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    pipeline,
)

from fake_hub import patch_hf_clients

README = """---
license: mit
tags:
- image-classification
---
# tiny-vit

A tiny ViT for tests.
"""


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    """A saved tiny ViT classifier + image processor + model card."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    folder = tmp_path_factory.mktemp("tiny_vit")
    ViTForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    (folder / "README.md").write_text(README)
    return folder


def _small_folder(tmp_path, text="hello"):
    folder = tmp_path / "small"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text(text)
    return folder


def test_roundtrip_upload_and_load(fake_hub, tiny_vit_dir):
    api = HfApi()  # no endpoint given: must pick the fake one up from the patched constants
    assert api.endpoint == fake_hub.endpoint

    url = api.create_repo("tiny-vit")
    assert url.repo_id == "tester/tiny-vit" and url.startswith(fake_hub.endpoint)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("tiny-vit")
    assert exc.value.response.status_code == 409
    assert api.create_repo("tester/tiny-vit", exist_ok=True).repo_id == "tester/tiny-vit"

    info = api.upload_folder(folder_path=tiny_vit_dir, repo_id="tester/tiny-vit", commit_message="add model")
    assert info.oid == fake_hub.commit_log("tester/tiny-vit")[-1]["sha"]
    assert fake_hub.commit_log("tester/tiny-vit")[-1]["summary"] == "add model"

    expected = {".gitattributes", "README.md", "config.json", "model.safetensors", "preprocessor_config.json"}
    assert set(api.list_repo_files("tester/tiny-vit")) == expected
    assert set(huggingface_hub.list_repo_files("tiny-vit")) == expected  # module-level api, no namespace
    stored = fake_hub.repo_files("tiny-vit")
    assert stored["model.safetensors"] == (tiny_vit_dir / "model.safetensors").read_bytes()
    model_info = api.model_info("tester/tiny-vit")
    assert model_info.sha == info.oid
    assert {s.rfilename for s in model_info.siblings} == expected
    assert [c.title for c in api.list_repo_commits("tester/tiny-vit")] == ["add model", "initial commit"]

    # What was sent: README front matter validated; every write carried the token.
    assert fake_hub.requests_to("POST", "/api/validate-yaml")
    writes = [r for r in fake_hub.requests if r.method == "POST" and "/api/validate-yaml" not in r.path]
    assert {r.path for r in writes} >= {"/api/repos/create", "/api/models/tester/tiny-vit/preupload/main"}
    assert all(r.headers.get("Authorization") == f"Bearer {fake_hub.token}" for r in writes)

    # Re-uploading the same folder changes nothing (preupload reports the remote oids): no new commit.
    n_commits = len(fake_hub.commit_log("tester/tiny-vit"))
    api.upload_folder(folder_path=tiny_vit_dir, repo_id="tester/tiny-vit")
    assert len(fake_hub.commit_log("tester/tiny-vit")) == n_commits

    # transformers reads it back.
    local = AutoModelForImageClassification.from_pretrained(tiny_vit_dir)
    remote = AutoModelForImageClassification.from_pretrained("tester/tiny-vit")
    local_sd, remote_sd = local.state_dict(), remote.state_dict()
    assert local_sd.keys() == remote_sd.keys()
    assert all(torch.equal(local_sd[k], remote_sd[k]) for k in local_sd)
    processor = AutoImageProcessor.from_pretrained("tester/tiny-vit")
    assert processor.size == {"height": 16, "width": 16}
    clf = pipeline("image-classification", model="tester/tiny-vit")
    preds = clf(Image.new("RGB", (20, 20), (120, 30, 200)))
    assert len(preds) == 3 and abs(sum(p["score"] for p in preds) - 1) < 1e-4

    path = huggingface_hub.snapshot_download("tester/tiny-vit")
    assert path.startswith(str(constants.HF_HUB_CACHE))

    assert fake_hub.unknown_requests == []
    assert fake_hub.outside_hosts == []  # nothing tried to resolve huggingface.co or any other host


def test_missing_repo_and_file(fake_hub, tmp_path):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        huggingface_hub.hf_hub_download("tester/does-not-exist", "config.json")
    fake_hub.publish("tester/seeded", {"a.txt": b"A", "sub/b.txt": b"B"})
    assert huggingface_hub.hf_hub_download("tester/seeded", "sub/b.txt", local_dir=tmp_path / "dl")
    assert (tmp_path / "dl" / "sub" / "b.txt").read_bytes() == b"B"
    with pytest.raises(huggingface_hub.errors.EntryNotFoundError):
        huggingface_hub.hf_hub_download("tester/seeded", "nope.txt")
    assert [f.path for f in api.list_repo_tree("tester/seeded")] == [".gitattributes", "a.txt", "sub"]


def test_invalid_readme_yaml_rejected(fake_hub, tmp_path):
    folder = _small_folder(tmp_path)
    (folder / "README.md").write_text("---\nlicense: [mit\n---\nbroken\n")
    HfApi().create_repo("bad-card")
    with pytest.raises(ValueError, match="Invalid metadata"):
        HfApi().upload_folder(folder_path=folder, repo_id="tester/bad-card")


def test_failure_modes(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo("flaky")
    folder = _small_folder(tmp_path)

    fake_hub.fail_writes = True
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(folder_path=folder, repo_id="tester/flaky")
    assert exc.value.response.status_code == 500
    assert len(fake_hub.requests_to("POST", "/preupload/")) == 6  # huggingface_hub retried 5 times (no sleeping)
    fake_hub.fail_writes = False

    fake_hub.reject_auth = True
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_folder(folder_path=folder, repo_id="tester/flaky")
    assert exc.value.response.status_code == 401
    fake_hub.reject_auth = False

    with pytest.raises(HfHubHTTPError) as exc:  # writes need the token
        HfApi(token=False).create_repo("no-token")
    assert exc.value.response.status_code == 401
    assert not fake_hub.repo_exists("no-token")

    assert api.upload_folder(folder_path=folder, repo_id="tester/flaky").oid  # healthy again
    assert fake_hub.repo_files("tester/flaky")["notes.txt"] == b"hello"

    fake_hub.stop()
    with pytest.raises(huggingface_hub.utils.httpx.ConnectError):
        api.model_info("tester/flaky")
    with pytest.raises(huggingface_hub.utils.httpx.ConnectError):
        api.create_repo("after-stop")


def test_outside_network_is_blocked(fake_hub):
    with pytest.raises(huggingface_hub.utils.httpx.ConnectError, match="blocked"):
        huggingface_hub.utils.get_session().get("https://huggingface.co/api/models")
    assert fake_hub.outside_hosts == ["huggingface.co"]


def test_subprocess_sees_fake_hub(fake_hub):
    """The fixture also exports HF_ENDPOINT / HF_TOKEN / HF_HUB_OFFLINE=0 for child processes."""
    fake_hub.publish("tester/child", {"x.txt": b"x"})
    code = "from huggingface_hub import HfApi; print(sorted(HfApi().list_repo_files('tester/child')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "['.gitattributes', 'x.txt']"


def test_offline_restored_after_fixture(tmp_path):
    # Runs after the fixture tests above (file order): conftest's offline settings are back.
    assert constants.HF_HUB_OFFLINE is True and huggingface_hub.is_offline_mode()
    assert constants.ENDPOINT == "https://huggingface.co"
    before = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE)
    with pytest.MonkeyPatch.context() as mp:
        patch_hf_clients(mp, "http://127.0.0.1:9", "hf_x", tmp_path)
        assert constants.HF_HUB_OFFLINE is False and constants.ENDPOINT == "http://127.0.0.1:9"
    assert constants.HF_HUB_OFFLINE is True
    assert (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE) == before
    assert huggingface_hub.hf_api.api.endpoint == "https://huggingface.co"
