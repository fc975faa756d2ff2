"""Upload a generated dataset folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi


def push_dataset(root: str | Path, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Create the dataset repo if needed and upload the card, the sample grid and the shards; return the URL."""
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=url.repo_id,
        repo_type="dataset",
        folder_path=str(root),
        allow_patterns=["README.md", "sample_grid.png", "generation_config.json", "data/train-*.parquet"],
        commit_message="Upload free-atm dataset",
    )
    return str(url)
