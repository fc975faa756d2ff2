"""Upload a generated dataset folder to the Hugging Face Hub, and check before the work that it can be.

Pitfall: a generation runs for hours before its push; a missing login or a repo the token cannot write
must fail before the first image, not after the last, so :func:`check_push_access` runs up front.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from ..usage import CommandFailure

#: what a dataset folder holds for the Hub (the local resume files and caches stay behind)
UPLOADED = ["README.md", "sample_grid.png", "generation_config.json", "data/train-*.parquet"]


def check_push_access(repo_id: str, token: str | None = None) -> None:
    """Raise ``ValueError`` unless a Hub login exists and the dataset repo ``repo_id`` exists or can be
    created by it (it is created now, empty); :class:`CommandFailure` if the Hub cannot be reached."""
    api = HfApi(token=token)
    try:
        api.whoami()
    except LocalTokenNotFoundError:
        raise ValueError(f"--push-to-hub {repo_id} needs a Hub login: run `hf auth login` or set HF_TOKEN") from None
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code == 401:
            raise ValueError(f"--push-to-hub {repo_id}: the Hub refused the token (401); log in again") from None
        raise CommandFailure(f"--push-to-hub {repo_id}: the Hub could not be asked ({error})") from None
    except OSError as error:
        raise CommandFailure(f"--push-to-hub {repo_id}: the Hub could not be reached ({error})") from None
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    except HfHubHTTPError as error:
        raise ValueError(
            f"--push-to-hub {repo_id}: this login cannot create or write that dataset repo ({error})"
        ) from None


def push_dataset(root: str | Path, repo_id: str, private: bool | None = None, token: str | None = None) -> str:
    """Create the dataset repo if needed and upload the card, the sample grid, the settings and the shards;
    return the URL. ``upload_folder`` commits a large folder in several batches and, run again, resumes an
    interrupted upload (huggingface_hub 2), so a failed upload is a :class:`CommandFailure` saying how to
    retry: the dataset on disk is complete either way."""
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            repo_type="dataset",
            folder_path=str(root),
            allow_patterns=UPLOADED,
            commit_message="Upload free-atm dataset",
        )
    except (HfHubHTTPError, OSError) as error:
        raise CommandFailure(
            f"pushing {root} to {repo_id} failed ({error}); the dataset is complete on disk: push it again with "
            f"`hf upload {repo_id} {root} --repo-type dataset`"
        ) from None
    return str(url)
